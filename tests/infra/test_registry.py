"""ECR: pull-through cache rules, and the creation templates of every repository ECR creates for the mirror."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk.assertions import Capture, Match

from ecr_mirror_cdk.config_parse import parse_config
from stacks.registry import scanning_filters

from .conftest import Synthesized, synthesize


def lifecycle_rules(text: str) -> list[dict]:
    return json.loads(text)["rules"]


def test_mirrored_repositories_are_created_on_push_from_one_template_of_the_mirror_prefix(
    default_app: Synthesized,
) -> None:
    # Given six images, every one under mirror/ (one by its target mirror/dotnet-runtime)
    assert {i.repository.split("/")[0] for i in default_app.config.images} == {"mirror"}
    # Then one CREATE_ON_PUSH template gives every repository the copier's first push creates its settings
    lifecycle = Capture()
    default_app.template.has_resource(
        "AWS::ECR::RepositoryCreationTemplate",
        {
            "Properties": {
                "Prefix": "mirror",
                "AppliedFor": ["CREATE_ON_PUSH"],
                "EncryptionConfiguration": {"EncryptionType": "AES256"},
                "ImageTagMutability": "MUTABLE",
                "LifecyclePolicy": lifecycle,
                "RepositoryPolicy": Match.absent(),  # no sharing in this config
                "CustomRoleArn": Match.absent(),  # no tags or KMS key: ECR's service-linked role creates
                "ResourceTags": Match.absent(),
            },
            "DeletionPolicy": "Delete",  # stated, for `cdk import` of a template the account already has
        },
    )
    [rule] = lifecycle_rules(lifecycle.as_string())
    assert rule["selection"]["tagStatus"] == "untagged"
    assert (rule["selection"]["countUnit"], rule["selection"]["countNumber"]) == ("days", 7)
    assert rule["action"] == {"type": "expire"}


def test_no_mirrored_image_is_a_repository_of_the_stack(default_app: Synthesized) -> None:
    # Only the build's own repositories are stack resources, however many images mirror.yaml lists.
    repositories = default_app.template.find_resources("AWS::ECR::Repository")
    assert sorted(repositories) == sorted([default_app.by_path("Build/ImageRepository"),
                                           default_app.by_path("Build/CacheRepository")])


def test_a_target_outside_the_mirror_prefix_is_created_from_a_template_of_its_parent(tmp_path: Path) -> None:
    images = [{"source": "python", "tags": ["3"]},
              {"source": "ghcr.io/org/api", "tags": ["1"], "target": "services/api"},
              {"source": "ghcr.io/org/web", "tags": ["1"], "target": "services/web"},
              {"source": "ghcr.io/org/db", "tags": ["1"], "target": "services/data/db"},
              {"source": "quay.io/org/tool", "tags": ["1"], "target": "tools/team/tool"}]
    app = synthesize(parse_config({"images": images}, origin="targets.yaml"), tmp_path)

    templates = app.template.find_resources("AWS::ECR::RepositoryCreationTemplate",
                                            {"Properties": {"AppliedFor": ["CREATE_ON_PUSH"]}})
    # The nearest parent, and services/data under services is covered by services' template
    assert sorted(t["Properties"]["Prefix"] for t in templates.values()) == ["mirror", "services", "tools/team"]


def test_the_expiry_follows_the_config(variant_app: Synthesized) -> None:
    lifecycle = Capture()
    variant_app.template.has_resource_properties(
        "AWS::ECR::RepositoryCreationTemplate",
        {"Prefix": "cache", "AppliedFor": ["CREATE_ON_PUSH"], "LifecyclePolicy": lifecycle},
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
    rules = default_app.template.find_resources("AWS::ECR::PullThroughCacheRule")
    templates = default_app.template.find_resources("AWS::ECR::RepositoryCreationTemplate")
    assert len(rules) == len(default_app.config.pull_through_cache)
    assert len(templates) == len(default_app.config.pull_through_cache) + 1  # and the mirror prefix's
    assert {r.get("DeletionPolicy") for r in [*rules.values(), *templates.values()]} == {"Delete"}
