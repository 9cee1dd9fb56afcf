"""ECR: mirrored repositories, pull-through cache rules and their creation templates."""

from __future__ import annotations

import json

from aws_cdk.assertions import Capture, Match

from stacks.registry import scanning_filters

from .conftest import Synthesized


def lifecycle_rules(text: str) -> list[dict]:
    return json.loads(text)["rules"]


def test_each_directly_mirrored_image_gets_a_scanned_encrypted_retained_repository(default_app: Synthesized) -> None:
    direct = [image for image in default_app.config.images]
    assert {i.repository for i in direct} == {"mirror/gcr.io/distroless/base-debian12", "mirror/dotnet-runtime",
                                              "mirror/docker.io/moby/buildkit", "mirror/docker.io/tonistiigi/binfmt",
                                              "mirror/docker.io/library/python", "mirror/docker.io/library/node"}
    for image in direct:
        lifecycle = Capture()
        default_app.template.has_resource(
            "AWS::ECR::Repository",
            {
                "Properties": {
                    "RepositoryName": image.repository,
                    "ImageScanningConfiguration": {"ScanOnPush": True},
                    "EncryptionConfiguration": {"EncryptionType": "AES256"},
                    "ImageTagMutability": "MUTABLE",
                    "LifecyclePolicy": {"LifecyclePolicyText": lifecycle},
                },
                # Kept on stack deletion; deleted when the first create rolls back, or the retry would
                # fail on the fixed name.
                "DeletionPolicy": "RetainExceptOnCreate",
                "UpdateReplacePolicy": "Retain",
            },
        )
        [rule] = lifecycle_rules(lifecycle.as_string())
        assert rule["selection"]["tagStatus"] == "untagged"
        assert (rule["selection"]["countUnit"], rule["selection"]["countNumber"]) == ("days", 7)
        assert rule["action"] == {"type": "expire"}


def test_images_served_by_a_cache_rule_get_no_repository_of_the_stack(default_app: Synthesized) -> None:
    # The cache creates docker-hub/library/python on first pull; a stack-owned one would collide.
    repositories = default_app.template.find_resources("AWS::ECR::Repository")
    names = {r["Properties"].get("RepositoryName") for r in repositories.values()}
    assert not names & {"docker-hub/library/python", "docker-hub/library/node", "docker-hub/moby/buildkit"}


def test_tag_mutability_and_expiry_follow_the_config(variant_app: Synthesized) -> None:
    lifecycle = Capture()
    variant_app.template.has_resource_properties(
        "AWS::ECR::Repository",
        {
            "RepositoryName": "cache/registry.example.com-5000/team/base",
            "ImageTagMutability": "IMMUTABLE",
            "LifecyclePolicy": {"LifecyclePolicyText": lifecycle},
        },
    )
    assert lifecycle_rules(lifecycle.as_string())[0]["selection"]["countNumber"] == 3


def test_each_configured_upstream_gets_a_cache_rule_on_its_registry_url(default_app: Synthesized) -> None:
    expected = {
        "docker-hub": "registry-1.docker.io",
        "ecr-public": "public.ecr.aws",
        "quay": "quay.io",
        "k8s": "registry.k8s.io",
    }
    for upstream, url in expected.items():
        default_app.template.has_resource_properties(
            "AWS::ECR::PullThroughCacheRule",
            {"EcrRepositoryPrefix": upstream, "UpstreamRegistry": upstream, "UpstreamRegistryUrl": url},
        )


def test_the_docker_hub_rule_authenticates_with_the_stack_secret(default_app: Synthesized) -> None:
    secret = default_app.logical_id("AWS::SecretsManager::Secret", Name="ecr-pullthroughcache/docker-hub")
    default_app.template.has_resource_properties(
        "AWS::ECR::PullThroughCacheRule",
        {"UpstreamRegistry": "docker-hub", "CredentialArn": {"Ref": secret}},
    )


def test_anonymous_upstreams_have_no_credential(default_app: Synthesized) -> None:
    for upstream in ("ecr-public", "quay", "k8s"):
        default_app.template.has_resource_properties(
            "AWS::ECR::PullThroughCacheRule", {"UpstreamRegistry": upstream, "CredentialArn": Match.absent()}
        )


def test_a_credentialed_upstream_uses_the_secret_it_names(variant_app: Synthesized) -> None:
    arn = Capture()
    variant_app.template.has_resource_properties(
        "AWS::ECR::PullThroughCacheRule",
        {
            "UpstreamRegistry": "github-container-registry",
            "EcrRepositoryPrefix": "ghcr",
            "UpstreamRegistryUrl": "ghcr.io",
            "CredentialArn": arn,
        },
    )
    # The complete ARN, suffix included, as DescribeSecret returns it at deploy (test_credentials)
    [lookup_id, field] = arn.as_object()["Fn::GetAtt"]
    call = json.loads(variant_app.data["Resources"][lookup_id]["Properties"]["Create"])
    assert (field, call["parameters"]) == ("ARN", {"SecretId": "ecr-pullthroughcache/github"})


def test_each_cache_prefix_gets_a_creation_template(default_app: Synthesized) -> None:
    for rule in default_app.config.pull_through_cache:
        lifecycle = Capture()
        default_app.template.has_resource_properties(
            "AWS::ECR::RepositoryCreationTemplate",
            {
                "Prefix": rule.prefix,
                "AppliedFor": ["PULL_THROUGH_CACHE"],
                "EncryptionConfiguration": {"EncryptionType": "AES256"},
                "ImageTagMutability": "MUTABLE",
                "LifecyclePolicy": lifecycle,
            },
        )
        [expiry] = lifecycle_rules(lifecycle.as_string())
        assert expiry["selection"]["tagStatus"] == "untagged"
        assert expiry["selection"]["countNumber"] == 7


def test_cache_creation_templates_are_mutable_even_when_the_config_asks_for_immutable_tags(
    variant_app: Synthesized,
) -> None:
    # ECR may not update cached images with immutable tags, and the copier moves cached tags itself.
    assert variant_app.config.repositories.tag_mutability == "IMMUTABLE"
    for rule in variant_app.config.pull_through_cache:
        variant_app.template.has_resource_properties(
            "AWS::ECR::RepositoryCreationTemplate",
            {"Prefix": rule.prefix, "AppliedFor": ["PULL_THROUGH_CACHE"], "ImageTagMutability": "MUTABLE"},
        )


def test_no_resource_with_a_fixed_name_is_kept_when_the_first_create_rolls_back(
    default_app: Synthesized, variant_app: Synthesized
) -> None:
    names = {"AWS::ECR::Repository": "RepositoryName", "AWS::SecretsManager::Secret": "Name"}
    for app in (default_app, variant_app):
        for resource in app.data["Resources"].values():
            if resource.get("DeletionPolicy") == "Retain":
                assert names.get(resource["Type"]) not in resource["Properties"], resource


def test_every_repository_of_the_mirror_is_scanned_on_push(default_app: Synthesized, variant_app: Synthesized) -> None:
    # A creation template has no scanning setting: the cache's repositories get it from the registry.
    for app in (default_app, variant_app):
        filters = Capture()
        app.template.has_resource_properties(
            "AWS::ECR::RegistryScanningConfiguration",
            {"ScanType": "BASIC", "Rules": [{"ScanFrequency": "SCAN_ON_PUSH", "RepositoryFilters": filters}]},
        )
        found = filters.as_array()
        assert {f["FilterType"] for f in found} == {"WILDCARD"}
        expected = [{"Filter": name} for name in scanning_filters(app.config)]
        # ECR sets every repository no filter matches to manual scanning: the build's repository is listed too.
        expected.append({"Filter": {"Ref": app.by_path("Build/ImageRepository")}})
        assert sorted(json.dumps({"Filter": f["Filter"]}) for f in found) == sorted(map(json.dumps, expected))


def test_cache_rules_and_templates_state_a_deletion_policy_so_cdk_import_can_adopt_existing_ones(
    default_app: Synthesized,
) -> None:
    for kind in ("AWS::ECR::PullThroughCacheRule", "AWS::ECR::RepositoryCreationTemplate"):
        found = default_app.template.find_resources(kind)
        assert len(found) == len(default_app.config.pull_through_cache)
        assert {r.get("DeletionPolicy") for r in found.values()} == {"Delete"}
