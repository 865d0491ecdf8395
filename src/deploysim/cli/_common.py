"""What every room's CLI shares: how errors are printed and how tables reach a pipe."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console

EXIT_USAGE = 2
PIPE_WIDTH = 140


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr, then exit; ``message`` must already be free of PII and secrets."""
    # soft_wrap: paths and the resume command stay on one line, whole, to copy
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {message}", highlight=False)
    sys.exit(code)


def os_error_text(exc: OSError) -> str:
    """An OSError as ``reason: file`` (a JournalError's text already names its file)."""
    reason = exc.strerror or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


def output_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables into 80 columns when writing to a pipe or log."""
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console
