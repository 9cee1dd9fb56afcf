"""Another team's CDK app: three CodeBuild projects adopt the mirror from the installed ecr-mirror-cdk wheel."""

import sys

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks
from stacks.team import TeamStack

import ecr_mirror_cdk
from lambdas import OWNER

app = App()
TeamStack(app, "Team", registry_uri=app.node.get_context("registry_uri"),
          mirror_map=app.node.get_context("mirror_map"))
Validations.of(app).add_plugins(AwsSolutionsChecks(app))
app.synth()
print(f"ecr_mirror_cdk {ecr_mirror_cdk.__version__} from {ecr_mirror_cdk.__file__}; lambdas of {OWNER}",
      file=sys.stderr)
