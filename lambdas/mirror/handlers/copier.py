"""Copier: SQS batch -> one task per message; failed messages reported as batchItemFailures."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..jobs import queue_url_from_arn, run_message
from ..observability import logger, metrics, tracer
from .environment import copier_settings, endpoints_for

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> dict[str, Any]:
    settings = copier_settings()
    queue_url = settings.queue_url or queue_url_from_arn(record.event_source_arn)
    return run_message(record.body, endpoints_for(settings), receipt_handle=record.receipt_handle,
                       queue_url=queue_url)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
