"""The build construct as it lands in the template: project, repositories, least-privilege role, buildspec."""

import json

from aws_cdk.assertions import Match

from ecr_mirror_cdk.setup.mirror_map import MirrorMap
from ecr_mirror_cdk.setup_archive import setup_archive
from tests.build import cfn
from tests.build.conftest import SECRET_NAME

ECR_HOST = f"{cfn.ACCOUNT}.dkr.ecr.{cfn.REGION}.amazonaws.com"


def statements(app):
    found = []
    for resource in app.data["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            found += cfn.resolve(resource["Properties"]["PolicyDocument"]["Statement"], app.refs)
    return found


def allowed(app, action):
    out = []
    for statement in statements(app):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions:
            out += statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    return out


def test_the_project_is_a_privileged_standard_linux_image(build_app):
    build_app.template.has_resource_properties("AWS::CodeBuild::Project", {
        "Environment": Match.object_like({
            "Type": "LINUX_CONTAINER", "Image": "aws/codebuild/standard:7.0", "PrivilegedMode": True,
        }),
        "EncryptionKey": Match.any_value(),
        "LogsConfig": {"CloudWatchLogs": Match.object_like({"Status": "ENABLED"})},
    })


def test_logs_are_kept_for_a_bounded_time(build_app):
    build_app.template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": Match.any_value()})


def test_the_image_repository_is_retained_and_scanned_on_push(build_app):
    resource = build_app.data["Resources"][build_app.ids["image_repository"]]
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["Properties"]["ImageScanningConfiguration"] == {"ScanOnPush": True}


def test_the_cache_repository_expires_old_cache(build_app):
    policy = json.loads(build_app.data["Resources"][build_app.ids["cache_repository"]]["Properties"]
                        ["LifecyclePolicy"]["LifecyclePolicyText"])
    selections = [rule["selection"] for rule in policy["rules"]]
    assert {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
            "countNumber": 3} in selections
    assert any(s["tagStatus"] == "any" and s["countType"] == "imageCountMoreThan" for s in selections)


def test_the_stack_passes_registry_prefixes_and_mirrored_repositories_to_the_build(build_app):
    env = cfn.environment(build_app.data, build_app.refs)
    assert env["MIRROR_REGISTRY"] == ECR_HOST
    mirror = json.loads(env["MIRROR_MAP"])
    assert mirror["prefixes"] == {"docker.io": "docker-hub", "public.ecr.aws": "ecr-public", "quay.io": "quay",
                                  "registry.k8s.io": "k8s"}
    # Images at mirror/<host>/<path> are named by host; only the one elsewhere is listed.
    assert (mirror["mirror_prefix"], mirror["mirror_hosts"]) == ("mirror", ["docker.io", "gcr.io"])
    assert mirror["repositories"] == {"mcr.microsoft.com/dotnet/runtime": "mirror/dotnet-runtime"}


def test_the_builds_own_images_are_docker_hub_names_the_mirror_holds_without_the_docker_hub_rule(build_app):
    """Must hold: a fresh deploy builds before any Docker Hub token is stored."""
    env = cfn.environment(build_app.data, build_app.refs)
    mirror = MirrorMap.parse(env["MIRROR_MAP"])
    for image in (env["BUILDKIT_IMAGE"], env["BINFMT_IMAGE"]):
        _, path, candidates = mirror.route(image.split(":")[0])
        assert candidates[0] == f"mirror/docker.io/{path}", image  # the direct copy first, not docker-hub/...
    assert env["BUILDKIT_IMAGE"] == "moby/buildkit:buildx-stable-1"


def test_per_build_overrides_have_defaults_in_the_project(build_app):
    env = cfn.environment(build_app.data, build_app.refs)
    assert env["IMAGE_REPO_NAME"] == "images"
    assert {k: env[k] for k in ("PLATFORMS", "CONTEXT_DIR", "CONTAINER_NAME", "TAG_LATEST")} == {
        "PLATFORMS": "linux/amd64", "CONTEXT_DIR": ".", "CONTAINER_NAME": "app", "TAG_LATEST": "true"}


def test_the_role_can_log_in_to_ecr_anywhere_but_pull_only_from_the_mirror(build_app):
    assert allowed(build_app, "ecr:GetAuthorizationToken") == ["*"]
    pulls = allowed(build_app, "ecr:BatchGetImage")
    repo = f"arn:aws:ecr:{cfn.REGION}:{cfn.ACCOUNT}:repository/"
    assert sorted(pulls) == sorted([
        "arn:image_repository", "arn:cache_repository",
        f"{repo}mirror/*", f"{repo}mirror/dotnet-runtime",
        f"{repo}docker-hub/*", f"{repo}ecr-public/*", f"{repo}quay/*", f"{repo}k8s/*",
    ])


def test_pulls_through_a_cache_rule_may_create_and_import_under_its_prefix_only(build_app):
    repo = f"arn:aws:ecr:{cfn.REGION}:{cfn.ACCOUNT}:repository/"
    prefixes = [f"{repo}docker-hub/*", f"{repo}ecr-public/*", f"{repo}quay/*", f"{repo}k8s/*"]
    assert sorted(allowed(build_app, "ecr:BatchImportUpstreamImage")) == sorted(prefixes)
    assert sorted(allowed(build_app, "ecr:CreateRepository")) == sorted(prefixes)


def test_pushes_go_to_the_image_and_cache_repositories_only(build_app):
    assert sorted(allowed(build_app, "ecr:PutImage")) == ["arn:cache_repository", "arn:image_repository"]


def test_the_role_reads_the_docker_hub_secret_and_the_one_setup_module_object(build_app):
    secret = allowed(build_app, "secretsmanager:GetSecretValue")
    assert secret == [f"arn:aws:secretsmanager:{cfn.REGION}:{cfn.ACCOUNT}:secret:{SECRET_NAME}-??????"]
    (module,) = allowed(build_app, "s3:GetObject")
    asset = build_app.assets[0]
    assert module == f"arn:aws:s3:::{cfn.resolve({'Fn::Sub': asset['bucket']})}/{asset['key']}"
    assert not allowed(build_app, "ssm:GetParameters")


def test_teams_on_ssm_parameters_read_them_and_decrypt_only_through_ssm(ssm_build_app):
    params = f"arn:aws:ssm:{cfn.REGION}:{cfn.ACCOUNT}:parameter/CodeBuild/"
    assert allowed(ssm_build_app, "ssm:GetParameters") == [f"{params}DOCKER_HUB_ID", f"{params}DOCKER_HUB_PASSWORD"]
    (decrypt,) = [s for s in statements(ssm_build_app) if s["Action"] == "kms:Decrypt"]
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": f"ssm.{cfn.REGION}.amazonaws.com"}}
    assert not allowed(ssm_build_app, "secretsmanager:GetSecretValue")


def test_docker_hub_credentials_come_from_the_secret_json_keys(build_app):
    env = cfn.buildspec(build_app.data)["env"]
    secret = f"arn:aws:secretsmanager:{cfn.REGION}:{cfn.ACCOUNT}:secret:{SECRET_NAME}"
    assert env["secrets-manager"] == {"DOCKER_HUB_USERNAME": f"{secret}:username",
                                      "DOCKER_HUB_TOKEN": f"{secret}:accessToken"}
    assert env["shell"] == "bash"
    assert "parameter-store" not in env


def test_docker_hub_credentials_come_from_parameter_store_for_teams_set_up_that_way(ssm_build_app):
    env = cfn.buildspec(ssm_build_app.data)["env"]
    assert env["parameter-store"] == {"DOCKER_HUB_USERNAME": "/CodeBuild/DOCKER_HUB_ID",
                                      "DOCKER_HUB_TOKEN": "/CodeBuild/DOCKER_HUB_PASSWORD"}
    assert "secrets-manager" not in env


def test_both_logins_read_their_password_from_stdin(build_app):
    commands = "\n".join(cfn.buildspec(build_app.data)["phases"]["pre_build"]["commands"])
    assert 'aws ecr get-login-password | docker login --username AWS --password-stdin "$MIRROR_REGISTRY"' in commands
    assert 'printf \'%s\' "$DOCKER_HUB_TOKEN" | docker login --username "$DOCKER_HUB_USERNAME" --password-stdin' \
        in commands
    assert "echo $DOCKER_HUB_TOKEN" not in commands and 'echo "$DOCKER_HUB_TOKEN' not in commands


def test_the_buildx_builder_reads_the_mirror_config_and_reaches_the_loopback_endpoint(build_app):
    commands = cfn.buildspec(build_app.data)["phases"]["pre_build"]["commands"]
    (create,) = [c for c in commands if c.startswith("docker buildx create")]
    for flag in ('--driver-opt "image=$BUILDKIT_IMAGE"', "--driver docker-container", "--driver-opt network=host",
                 '--config "$MIRROR_BUILDKIT_CONFIG"'):
        assert flag in create


def test_the_build_uses_a_registry_cache_in_ecr_whose_export_never_fails_the_build(build_app):
    """Static: no BuildKit docker-container builder can run here (it needs the moby/buildkit image)."""
    (build,) = cfn.buildspec(build_app.data)["phases"]["build"]["commands"]
    # --cache-from comes in "${build_args[@]}", for the refs that exist (test_buildspec.py runs the check).
    assert "--cache-from" not in build
    assert ('--cache-to "type=registry,ref=$CACHE_REF,mode=max,image-manifest=true,oci-mediatypes=true,'
            'ignore-error=true"') in build
    assert build.count("docker buildx build") == 1
    for flag in ('--platform "$PLATFORMS"', "--push", '--file "$DOCKERFILE"', '"${build_args[@]}"',
                 '--metadata-file "$METADATA_FILE"'):
        assert flag in build


def test_the_first_step_sets_up_the_mirror_with_the_module_fetched_from_s3(build_app):
    spec = cfn.buildspec(build_app.data)
    install = spec["phases"]["install"]["commands"]
    module = '"${TMPDIR:-/tmp}/setup_mirror.py"'
    assert install[-1] == (f'aws s3 cp --quiet "s3://$MIRROR_SETUP_BUCKET/$MIRROR_SETUP_KEY" {module}'
                           f" && python3 {module}")  # the registry: $MIRROR_REGISTRY
    assert spec["phases"]["install"]["on-failure"] == "ABORT"
    assert spec["phases"]["build"]["finally"] == [f"python3 {module} --report"]
    env = cfn.environment(build_app.data, build_app.refs)
    assert env["MIRROR_SETUP_KEY"] == build_app.assets[0]["key"]
    assert build_app.assets[0]["path"].read_bytes() == setup_archive()


def test_no_command_reads_or_rewrites_the_teams_dockerfile(build_app):
    """The Dockerfile is only handed to `docker buildx build --file`, as the team would."""
    spec = cfn.buildspec(build_app.data)
    commands = [c for phase in spec["phases"].values() for part in ("commands", "finally") for c in phase.get(part, [])]
    uses = [c for c in commands if "$DOCKERFILE" in c and not c.startswith(("DOCKERFILE=", "echo "))]
    assert len(uses) == 1 and uses[0].startswith("mapfile") and '--file "$DOCKERFILE"' in uses[0]
    assert not any("--build-context" in c or "redirect" in c for c in commands)


def test_pipelines_get_image_definitions_and_exported_variables(build_app):
    spec = cfn.buildspec(build_app.data)
    assert spec["env"]["exported-variables"] == ["IMAGE_URI", "IMAGE_DIGEST"]
    assert spec["artifacts"] == {"files": ["imagedefinitions.json", "imageDetail.json"]}
    assert spec["phases"]["pre_build"]["on-failure"] == "ABORT"
    assert spec["phases"]["build"]["on-failure"] == "ABORT"


# --- pipeline-ready: what a build needs to read its source and write its artifacts ------------------------


def test_builds_may_push_to_the_configured_repositories_and_prefixes(pipeline_build_app):
    repo = f"arn:aws:ecr:{cfn.REGION}:{cfn.ACCOUNT}:repository/"
    assert sorted(allowed(pipeline_build_app, "ecr:PutImage")) == sorted([
        "arn:cache_repository", "arn:image_repository", f"{repo}services/*", f"{repo}tools/linter"])
    assert f"{repo}services/*" in allowed(pipeline_build_app, "ecr:CompleteLayerUpload")


def test_the_role_reads_sources_and_writes_artifacts_in_the_pipelines_buckets(pipeline_build_app):
    assert "arn:aws:s3:::team-sources/*" in allowed(pipeline_build_app, "s3:GetObject*")
    assert "arn:aws:s3:::team-sources/*" not in allowed(pipeline_build_app, "s3:PutObject")
    assert "arn:aws:s3:::pipeline-artifacts/*" in allowed(pipeline_build_app, "s3:GetObject*")
    assert "arn:aws:s3:::pipeline-artifacts/*" in allowed(pipeline_build_app, "s3:PutObject")


def test_the_role_may_use_the_buckets_kms_keys(pipeline_build_app):
    from tests.build.conftest import ARTIFACT_KEY, SOURCE_KEY
    assert ARTIFACT_KEY in allowed(pipeline_build_app, "kms:GenerateDataKey*")
    assert SOURCE_KEY in allowed(pipeline_build_app, "kms:Decrypt")


def test_without_pipeline_options_the_role_touches_no_other_bucket_or_key(build_app):
    assert not allowed(build_app, "s3:PutObject") and not allowed(build_app, "kms:Decrypt")


def test_the_build_environment_image_can_come_from_the_mirror_pulled_with_the_service_role(pipeline_build_app):
    pipeline_build_app.template.has_resource_properties("AWS::CodeBuild::Project", {
        "Environment": Match.object_like({
            "Image": Match.any_value(), "ImagePullCredentialsType": "SERVICE_ROLE", "PrivilegedMode": True}),
    })
    _, properties = cfn.project(pipeline_build_app.data)
    image = cfn.resolve(properties["Environment"]["Image"], pipeline_build_app.refs)
    assert image == f"{ECR_HOST}/ecr-public/codebuild/amazonlinux-x86_64-standard:5.0"
