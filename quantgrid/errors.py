"""Bad input, as one line: shared by the driver's config loading and the shared settings."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input. The message is one line; the CLI prints it and exits 2."""


def one_line(exc: BaseException, last: bool = False) -> str:
    """An exception as one line: its whole message joined (or only its last line, for Ray's texts
    that start with a remote traceback), minus pydantic's documentation links, at most 400 chars."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("For further information")]
    if not lines:
        return type(exc).__name__
    text = " ".join((lines[-1] if last else " ".join(lines)).split())
    return text if len(text) <= 400 else text[:397] + "..."
