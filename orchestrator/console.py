"""The console every command prints through (rich).

Tables are laid out to at least MIN_WIDTH columns, and text is never wrapped: rich wraps at 80
columns when stdout is not a terminal, which turned a one-line warning or error into four lines
in a log. With soft wrap a message is one line in any terminal width and in any log file.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console

MIN_WIDTH = 110


def make_console(file: IO[str] | None = None) -> Console:
    return Console(file=file, width=max(MIN_WIDTH, Console(file=file).width), soft_wrap=True)
