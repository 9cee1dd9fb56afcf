"""A real, runnable image offline: Debian's static busybox in one layer, pushed over the distribution API.

`push_busybox(registry, "docker-hub/library/busybox", "latest", marker="...")` puts an image that
`docker run ... busybox sh -c ...` can run into a loopback registry; `marker` lands in /etc/marker, so a
test can tell which registry an image came from.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from tests.support.images import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Pusher, descriptor

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "cat", "echo", "ls", "true")


def layer(marker: str, extra: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            archive.addfile(info, io.BytesIO(data))

        for directory in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        add("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            archive.addfile(link)
        add("etc/marker", marker.encode())
        for name, content in (extra or {}).items():
            add(name.lstrip("/"), content.encode())
    return gzip.compress(out.getvalue(), mtime=0)


def push_busybox(registry: str, repository: str, tag: str, *, marker: str, extra: dict[str, str] | None = None,
                 credentials: tuple[str, str] | None = None) -> str:
    """Push a linux/amd64 Docker v2 image; returns its manifest digest."""
    username, password = credentials or (None, None)
    pusher = Pusher(registry, username=username, password=password)
    blob = layer(marker, extra)
    diff_id = descriptor("", gzip.decompress(blob))["digest"]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "busybox-static, /etc/marker"}],
    }).encode()
    pusher.blob(repository, blob)
    pusher.blob(repository, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config), "layers": [descriptor(DOCKER_LAYER, blob)],
    }).encode()
    return pusher.manifest(repository, tag, manifest, DOCKER_MANIFEST)
