"""Scheduled planner: EventBridge event -> spec from SSM -> plan (HEADs only) -> one SQS message per task."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..aws.observability import logger, metrics, tracer
from ..aws.state import ParameterState
from .environment import SPEC_MAX_AGE, endpoints_for, planner_settings
from .jobs import plan_and_enqueue


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = planner_settings()
    assert settings.spec_parameter and settings.queue_url  # noqa: S101 - planner_settings requires both
    spec = parameters.get_parameter(settings.spec_parameter, max_age=SPEC_MAX_AGE)
    state = ParameterState(settings.state_parameter) if settings.state_parameter else None
    return plan_and_enqueue(spec, endpoints_for(settings), settings.queue_url, origin=f"ssm:{settings.spec_parameter}",
                            state=state)
