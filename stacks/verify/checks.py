"""What `make verify`'s checks return, and how they word AWS errors: shared by every check module of this
package."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    line: str  # what holds, or what to fix
    queued: int = 0  # planner only: copies it queued, which the image check waits for

    def render(self) -> str:
        return f"{'OK' if self.ok else 'FAIL':<5} {self.name}: {self.line}"


def error(err: Exception) -> str:
    """A botocore error as code and message (never a request's parameters)."""
    response = getattr(err, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"{response['Error'].get('Code')}: {response['Error'].get('Message')}"
    return str(err)


def code(err: Exception) -> str | None:
    response = getattr(err, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def listing(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")
