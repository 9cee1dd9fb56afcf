"""Copier: SQS batch -> one task per message; failed messages reported as batchItemFailures.

Only a task that really failed is a batch item failure (it returns after the visibility timeout and,
the third time, goes to the dead-letter queue). A throttled task, or one there is no time left to
start, goes back to the queue as a new message and counts as done here, so waiting never fills the
dead-letter queue. Nothing raises for a failed batch, not even a batch of one: the CopierErrors alarm
means the function itself crashed or timed out.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..aws.observability import logger, metrics, tracer
from ..aws.queue import NOT_BEFORE, queue_url_from_arn, requeue
from .environment import copier_settings, endpoints_for, sqs_client
from .jobs import Waits, run_message

# A copy is not started with less than this left before the Lambda timeout: a timeout would return every
# message of the batch, finished copies included. Larger than any one copy of a base image should take.
START_RESERVE_MS = 5 * 60 * 1000

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class CopierBatch:
    """One invocation's records: shares the 429 waits between them and watches the remaining time."""

    def __init__(self, context: LambdaContext) -> None:
        self.context = context
        self.settings = copier_settings()
        self.waits = Waits()

    def __call__(self, record: SQSRecord) -> dict[str, Any]:
        logger.remove_keys(["image", "tag"])  # the previous record's; run_message appends this one's
        queue_url = self.settings.queue_url or queue_url_from_arn(record.event_source_arn)
        if self.context.get_remaining_time_in_millis() < START_RESERVE_MS:
            now = time.time()
            requeue(record.body, queue_url, not_before=now, now=now, sqs=sqs_client())
            logger.info("no time left to start this copy; queued again", extra={"message_id": record.message_id})
            return {"status": "requeued"}
        attribute = record.message_attributes[NOT_BEFORE]  # None when absent (`.get` skips the wrapper)
        not_before = float(attribute.string_value) if attribute and attribute.string_value else None
        return run_message(record.body, endpoints_for(self.settings), queue_url=queue_url, not_before=not_before,
                           waits=self.waits, sqs=sqs_client())


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=CopierBatch(context), processor=processor,
                                    context=context)
