"""What the mirror costs in AWS for the simulated fleet: the requests and bytes one mirrored day
counted, times 30, at list prices.

Prices are US East (N. Virginia) list prices as the stored copies of these pages quote them, read
on 2026-12-01 (no live AWS page can be opened here; `PRICES` names each source and its date).
Request counts come from the simulation, the alarms and dashboards from the stack the simulation's mirror.yaml
synthesizes; a few figures it cannot measure (Lambda duration against
the real Docker Hub, idle SQS polling, log bytes) are stated assumptions below. Byte figures use
each image's real compressed size (`fleet.Image.real_mb`), since the simulated images are tiny.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from app import build
from ecr_mirror_cdk.config import Config
from ecr_mirror_cdk.constants import STACK_NAME
from lambdas.mirror.settings import METRICS_PER_UPSTREAM, SERVICE_METRICS
from tests.support.cdk import cdk_app

from .fleet import MIRRORED_PLATFORMS, Day
from .run import Result
from .world import mirror_config

DAYS_PER_MONTH = 30
REGION = "us-east-1"
READ_ON = "2026-12-01"


@dataclass(frozen=True)
class Price:
    amount: float
    unit: str
    source: str


PRICES = {
    "lambda_request": Price(0.20 / 1e6, "request", "cloudchipr.com/blog/aws-lambda-pricing (2024, US East)"),
    "lambda_gb_second": Price(0.0000133334, "GB-second, arm64",
                              "cloudchipr.com/blog/aws-lambda-pricing (2024, US East), first 7.5 billion GB-s"),
    "sqs_request": Price(0.40 / 1e6, "request, standard queue",
                         "cloudburn.io/blog/amazon-sqs-pricing (US East, March 2026)"),
    "ecr_storage": Price(0.10, "GB-month", "cloudburn.io/blog/amazon-ecr-pricing (US East, March 2026)"),
    "transfer_same_region": Price(0.0, "GB, ECR to AWS compute in the same region, and any transfer in",
                                  "cloudburn.io/blog/amazon-ecr-pricing (US East, March 2026)"),
    "cw_metric": Price(0.30, "custom metric-month, first 10,000",
                       "cal53.calculator.city/cloudwatch-custom-metrics-calculator (undated)"),
    "cw_alarm": Price(0.10, "standard-resolution alarm-month",
                      "c3x.dev/resources/aws/aws_cloudwatch_metric_alarm (undated)"),
    "cw_dashboard": Price(3.00, "dashboard-month (3 free per account)",
                          "factualminds.com CloudWatch pricing post (2026-06-13); "
                          "free tier: aws.amazon.com/cloudwatch/pricing"),
    "cw_logs": Price(0.50, "GB ingested", "factualminds.com CloudWatch pricing post (2026-06-13)"),
}

# Assumptions the simulation cannot measure (loopback requests take microseconds).
PLANNER_MEMORY_GB = 0.5  # ecr_mirror_cdk/constants.py PLANNER_MEMORY_MB
COPIER_MEMORY_GB = 1.0  # COPIER_MEMORY_MB
PLANNER_FIXED_S = 1.0  # start, secret, ECR token, a HEAD per tag at ECR
HEAD_LATENCY_S = 0.2  # one HEAD at Docker Hub, token included; the planner runs 8 at once
PLANNER_WORKERS = 8
COPIER_FIXED_S = 1.0
COPIER_MB_PER_S = 50.0
SQS_POLLERS = 5  # Lambda's pollers long-poll (20 s) an idle queue; their number is AWS's, assumed here
SQS_LONG_POLL_S = 20
LOG_BYTES_PER_INVOCATION = 4000  # START/END/REPORT lines, one summary line, the EMF metrics blob


@dataclass(frozen=True)
class Line:
    item: str
    quantity: str
    price: str
    monthly: float


def month(per_day: float) -> float:
    return per_day * DAYS_PER_MONTH


def dollars(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def stack_resources(config: Config) -> Counter[str]:
    """Resource types in the mirror stack's template for `config`, synthesized as `make synth` does."""
    with tempfile.TemporaryDirectory() as outdir:
        app = cdk_app(Path(outdir))
        build(app, config)
        app.synth()
        template = json.loads((Path(outdir) / f"{STACK_NAME}.template.json").read_text())
    return Counter(resource["Type"] for resource in template["Resources"].values())


def lines(result: Result, day: Day) -> list[Line]:
    """The month's cost lines for one mirrored day's counters and the stack its mirror.yaml synthesizes."""
    sizes = {image.name: image.real_mb for image in day.images}
    platforms = len(MIRRORED_PLATFORMS)
    runs, tasks = result.planner_runs, result.copier_tasks
    heads_per_run = result.mirror_heads / max(runs, 1)
    bumped_mb = sum(sizes[s.image] for s in result.staleness) * platforms
    planner_s = PLANNER_FIXED_S + math.ceil(heads_per_run / PLANNER_WORKERS) * HEAD_LATENCY_S
    copier_s = tasks * COPIER_FIXED_S + bumped_mb / COPIER_MB_PER_S
    gb_seconds = month(runs * planner_s * PLANNER_MEMORY_GB + copier_s * COPIER_MEMORY_GB)
    requests = month(runs + tasks)
    sends = month(sum(math.ceil(c["copy"] / 10) for when, c in result.syncs if when >= 0))
    polls = month(SQS_POLLERS * 86400 / SQS_LONG_POLL_S)
    sqs_requests = sends + polls + month(tasks)  # plus one delete per message
    stored_gb = sum(sizes.values()) * platforms / 1000
    superseded_gb = bumped_mb * 7 / 1000  # a moved tag leaves its old image untagged until the 7-day expiry
    pulled_gb = month(sum(sizes[name] * count for name, count in result.image_pulls.items()) / 1000)
    upstreams = 1  # the fleet mirrors Docker Hub only
    metrics = len(SERVICE_METRICS) + 2 + len(METRICS_PER_UPSTREAM) * upstreams  # + ColdStart per function
    log_gb = month((runs + tasks) * LOG_BYTES_PER_INVOCATION) / 1e9
    resources = stack_resources(mirror_config(list(day.images), result.schedule))
    alarms, dashboards = resources["AWS::CloudWatch::Alarm"], resources["AWS::CloudWatch::Dashboard"]
    p = PRICES
    return [
        Line("Lambda requests", f"{requests:,.0f} ({runs} planner runs + {tasks} copies a day)",
             "$0.20 per million", requests * p["lambda_request"].amount),
        Line("Lambda duration", f"{gb_seconds:,.0f} GB-s (planner {planner_s:.1f} s x {PLANNER_MEMORY_GB:g} GB; "
             f"copier {COPIER_FIXED_S:g} s + {COPIER_MB_PER_S:g} MB/s x {COPIER_MEMORY_GB:g} GB)",
             "$0.0000133334 per GB-s", gb_seconds * p["lambda_gb_second"].amount),
        Line("SQS requests", f"{sqs_requests:,.0f} ({polls:,.0f} idle long polls, {sends + month(tasks):,.0f} "
             "sends and deletes)", "$0.40 per million", sqs_requests * p["sqs_request"].amount),
        Line("ECR storage", f"{stored_gb + superseded_gb:.1f} GB ({stored_gb:.1f} GB current, {superseded_gb:.1f} GB "
             "superseded, 7-day expiry)", "$0.10 per GB-month", (stored_gb + superseded_gb) * p["ecr_storage"].amount),
        Line("Data transfer in", f"{month(bumped_mb) / 1000:.1f} GB from Docker Hub (the copies of bumped tags)",
             "$0.00 per GB in", month(bumped_mb) / 1000 * p["transfer_same_region"].amount),
        Line("Data transfer", f"{pulled_gb:,.0f} GB ECR to CodeBuild, same region (no NAT gateway)",
             "$0.00 per GB", pulled_gb * p["transfer_same_region"].amount),
        Line("CloudWatch metrics", f"{metrics} custom metrics (EMF)", "$0.30 per metric-month",
             metrics * p["cw_metric"].amount),
        Line("CloudWatch alarms and dashboard", f"{alarms} alarms, {dashboards} dashboard",
             "$0.10 per alarm, $3.00 per dashboard (3 free)",
             alarms * p["cw_alarm"].amount + dashboards * p["cw_dashboard"].amount),
        Line("CloudWatch Logs", f"{log_gb * 1000:,.0f} MB ({LOG_BYTES_PER_INVOCATION // 1000} kB per invocation)",
             "$0.50 per GB ingested", log_gb * p["cw_logs"].amount),
    ]


def total(rows: list[Line]) -> float:
    return sum(row.monthly for row in rows)


def table(rows: list[Line]) -> str:
    body = [("Item", "Per month", "List price", "Cost"),
            *((r.item, r.quantity, r.price, dollars(r.monthly)) for r in rows),
            ("Total", "", "", dollars(total(rows)))]
    widths = [max(len(row[i]) for row in body) for i in range(4)]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in body]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(rows: list[Line]) -> str:
    out = ["| Item | Per month | List price | Cost |", "|---|---|---|--:|"]
    out += [f"| {r.item} | {r.quantity} | {r.price} | {dollars(r.monthly)} |" for r in rows]
    out.append(f"| **Total** | | | **{dollars(total(rows))}** |")
    return "\n".join(out)


def sources() -> str:
    return "\n".join(f"- {price.unit}: {dollars(price.amount) if price.amount >= 0.01 else f'${price.amount:.10f}'}"
                     f" — {price.source}" for price in PRICES.values())
