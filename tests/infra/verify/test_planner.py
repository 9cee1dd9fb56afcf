"""`make verify`'s checks of the sync: the planner runs, and every configured tag is in ECR, waiting for the
copies it queued (stacks/verify/planner.py)."""

from __future__ import annotations

import io
import json

from botocore.response import StreamingBody
from botocore.stub import ANY

from stacks.verify.planner import COPY_WAIT

from ..conftest import Synthesized
from .world import PLANNER, SUMMARY, Partly, World, failures, ready


def test_a_planner_that_raises_is_its_error_and_where_its_log_is(world: World, capsys) -> None:
    lambda_ = Partly(world.aws, "lambda", {"invoke", "get_function_configuration"})
    error = json.dumps({"errorType": "AttributeError",
                        "errorMessage": "'HTTPResponse' object has no attribute 'json'"}).encode()
    lambda_.stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled",
                                         "Payload": StreamingBody(io.BytesIO(error), len(error))},
                              {"FunctionName": PLANNER, "InvocationType": "RequestResponse", "Payload": ANY})
    lambda_.stub.add_response("get_function_configuration", {"LoggingConfig": {"LogGroup": "/mirror/planner"}},
                              {"FunctionName": PLANNER})
    world.lambda_ = lambda_
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == ["FAIL  planner: EcrMirror-Planner failed: AttributeError: 'HTTPResponse' object has "
                               "no attribute 'json': see aws logs tail /mirror/planner --since 15m"]


def test_a_plan_with_failed_tags_fails_and_points_at_the_log(world: World, capsys) -> None:
    ready(world, summary={**SUMMARY, "skip": 3, "failed": 1})

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == ["FAIL  planner: 1 of 4 tags failed to plan (each is a 'failed' line in its log): "
                               f"aws logs tail /aws/lambda/{PLANNER} --since 15m"]


def test_copies_the_planner_queued_are_waited_for(world: World, capsys) -> None:
    world.client("ecr").batch_delete_image(repositoryName=world.config.images[0].repository,
                                           imageIds=[{"imageTag": "3.12-slim"}])
    world.clock.on_sleep.append(lambda: world.put_tag("python", "3.12-slim"))  # the copier's work arrives
    ready(world, summary={**SUMMARY, "skip": 3, "copy": 1, "enqueued": 1})

    status, lines = world.run(capsys=capsys)

    assert status == 0, lines
    assert "OK    planner: 3 images, 4 tags: 1 queued for copy, 3 up to date" in lines
    assert 0 < world.clock.t < COPY_WAIT


def test_a_tag_missing_from_ecr_is_named_with_its_repository(world: World, capsys) -> None:
    python = world.config.images[0].repository
    world.client("ecr").batch_delete_image(repositoryName=python, imageIds=[{"imageTag": "3.12-slim"}])
    node = world.config.images[1].repository
    world.client("ecr").batch_delete_image(repositoryName=node, imageIds=[{"imageTag": "22.11.0-bookworm-slim"}])
    ready(world)

    status, lines = world.run(capsys=capsys)

    assert status == 1
    assert failures(lines) == [
        f"FAIL  images: not in ECR: python:3.12-slim ({python}), node ({node}: no tag matching "
        r"'22\.\d+\.\d+-bookworm-slim'): copies may still be running (run make verify again in a few "
        "minutes); failed copies wait in https://sqs.us-east-1.amazonaws.com/123456789012/dlq"]


def test_the_stack_names_its_planner_for_make_verify(default_app: Synthesized) -> None:
    default_app.template.has_output("PlannerFunctionName", {"Value": {"Ref": default_app.by_path("Sync/Planner")}})
