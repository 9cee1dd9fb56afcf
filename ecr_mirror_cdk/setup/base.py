"""What every module of the setup shares: its one error, JSON and file reading and writing, loopback hosts,
and waiting for a process to end."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import time
from pathlib import Path


class SetupError(Exception):
    """Bad input or a host we cannot configure: one line, and nothing changed."""


def load_json(text: str) -> object:
    """json.loads, with a nesting too deep for the parser reported as the ValueError it is to the user."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def restore(path: Path, text: str | None) -> None:
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_atomically(path, text)


def read_text(path: Path) -> str | None:
    """The file's text, None if it does not exist; SetupError naming it if it cannot be read."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SetupError(f"{path}: cannot read: {err.strerror}") from None


def alive(pid: int) -> bool:
    """Running, not merely a zombie its parent has yet to reap."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reaps it when it is our own child
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def gone(pid: int, seconds: float) -> bool:
    """Wait up to `seconds` for a process to end; whether it did."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def end(pid: int, seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not ended within `seconds`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        if not gone(pid, seconds):
            os.kill(pid, signal.SIGKILL)
            gone(pid, 5)
