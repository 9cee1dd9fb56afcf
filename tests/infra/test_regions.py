"""stacks/regions.py's Powertools arm64 table is Powertools' published list for the layer the stack pins."""

from __future__ import annotations

import re

import pytest
from aws_cdk import Environment
from aws_cdk.assertions import Template

from ecr_mirror_cdk import constants
from ecr_mirror_cdk.config import ConfigError
from stacks.mirror_stack import MirrorStack
from stacks.regions import POWERTOOLS_ARM64_REGIONS, POWERTOOLS_TABLE_FOR
from tests.support.cdk import cdk_app

from .conftest import REPO, Synthesized


@pytest.mark.parametrize("requirements", ["requirements.txt", "requirements-dev.txt"])
def test_the_region_table_was_taken_for_the_layer_and_powertools_version_the_stack_pins(requirements: str) -> None:
    # A new layer may add or drop regions: move the pin, then take the table again from Powertools' docs.
    pinned = re.search(r"^aws-lambda-powertools\S*==(\S+)$", (REPO / requirements).read_text(), re.M)

    assert pinned is not None
    assert (constants.POWERTOOLS_LAYER_VERSION, pinned.group(1)) == POWERTOOLS_TABLE_FOR
    assert POWERTOOLS_TABLE_FOR[1] == constants.POWERTOOLS_VERSION


@pytest.mark.parametrize("region", ["ap-southeast-4", "ap-southeast-5", "ap-southeast-7"])
def test_a_stack_in_a_region_powertools_lists_for_arm64_gets_the_pinned_layer_there(
    default_app: Synthesized, region: str,
) -> None:
    stack = MirrorStack(cdk_app(), "EcrMirror", config=default_app.config, env=Environment(region=region))

    Template.from_stack(stack).has_resource_properties("AWS::Lambda::Function", {"Layers": [
        f"arn:aws:lambda:{region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-python313-arm64:27"]})


def test_a_region_with_the_layer_but_no_codebuild_fails_synth_with_one_line_naming_it(
    default_app: Synthesized,
) -> None:
    # Powertools lists mx-central-1 (POWERTOOLS_ARM64_REGIONS), CodeBuild does not exist there.
    assert "mx-central-1" in POWERTOOLS_ARM64_REGIONS["aws"]

    with pytest.raises(ConfigError) as raised:
        MirrorStack(cdk_app(), "EcrMirror", config=default_app.config, env=Environment(region="mx-central-1"))

    assert str(raised.value) == ("region mx-central-1: AWS CodeBuild, which runs the mirror's build project, is not "
                                 "available there (stacks/regions.py lists the regions that have it)")
