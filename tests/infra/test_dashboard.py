"""The dashboard's per-upstream row: quota left, images deferred, oldest change not yet mirrored."""

from __future__ import annotations

import json

from .conftest import Synthesized


def test_the_dashboard_shows_quota_deferrals_and_staleness_for_every_upstream(default_app: Synthesized) -> None:
    [dashboard] = default_app.template.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    upstreams = {image.ref.registry for image in default_app.config.images}
    assert {"docker.io", "gcr.io", "mcr.microsoft.com"} <= upstreams
    for metric in ("UpstreamQuotaRemaining", "UpstreamImagesDeferred", "UpstreamStalenessSeconds"):
        for upstream in upstreams:
            series = f'\\"EcrMirror\\",\\"{metric}\\",\\"service\\",\\"ecr-mirror\\",\\"upstream\\",\\"{upstream}\\"'
            assert series in body, (metric, upstream)
    assert "Oldest change not yet mirrored" in body
