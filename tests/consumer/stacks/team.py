"""The team's projects: an inline buildspec, a GitHub Actions runner and a buildspec file in the source."""

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_codebuild as codebuild
from constructs import Construct

from ecr_mirror_cdk import MirrorAdoption

PRIVILEGED = codebuild.BuildEnvironment(privileged=True)


class TeamStack(Stack):
    def __init__(self, scope: Construct, id: str, *, registry_uri: str, mirror_map: str) -> None:
        super().__init__(scope, id)
        projects = [
            codebuild.Project(self, "Inline", environment=PRIVILEGED, build_spec=codebuild.BuildSpec.from_object({
                "version": "0.2", "phases": {"build": {"commands": ["docker pull busybox"]}}})),
            codebuild.Project(self, "Runner", environment=PRIVILEGED, source=codebuild.Source.git_hub(
                owner="org", repo="app",
                webhook_filters=[codebuild.FilterGroup.in_event_of(codebuild.EventAction.WORKFLOW_JOB_QUEUED)])),
            codebuild.Project(self, "File", environment=PRIVILEGED,
                              source=codebuild.Source.git_hub(owner="org", repo="service"),
                              build_spec=codebuild.BuildSpec.from_source_filename("ci/buildspec.yml")),
        ]
        for project in projects:
            self._acknowledge(project)
        MirrorAdoption(self, "Mirror", registry_uri=registry_uri, mirror_map=mirror_map).adopt_all(self)

    def _acknowledge(self, project: codebuild.Project) -> None:
        logical_id = self.resolve(self.get_logical_id(project.node.default_child))  # type: ignore[arg-type]
        arn = "arn:<AWS::Partition>:{}:<AWS::Region>:<AWS::AccountId>:{}"
        Validations.of(project).acknowledge(Acknowledgment(
            id="AwsSolutions-CB4", reason="The team's artifacts are encrypted with the AWS-managed S3 key."))
        for resource in (arn.format("logs", f"log-group:/aws/codebuild/<{logical_id}>:*"),
                         arn.format("codebuild", f"report-group/<{logical_id}>-*")):
            Validations.of(project).acknowledge(Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::{resource}]", reason="CodeBuild's default log and report grants."))
