"""What every room's CLI shares: the one error path, exit codes, and how tables reach a pipe."""

from __future__ import annotations

from typing import IO, Any

import click
from rich.console import Console

#: Exit codes, as documented in ``deploysim --help`` (the gate adds 3 fail, 4 inconclusive, 5 error).
EXIT_OK = 0
EXIT_NOT_RECONCILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PIPE_WIDTH = 140


class CliError(click.ClickException):
    """Every command's error: one ``error: ...`` line on stderr, then ``exit_code`` (message free of PII/secrets)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        from rich.markup import escape

        # soft_wrap: paths and the resume command stay on one line, whole, to copy; escaped: an install
        # hint's "deploysim[ray]" is text, not rich markup
        Console(stderr=True, file=file, soft_wrap=True).print(f"[red]error:[/red] {escape(self.format_message())}",
                                                             highlight=False)


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
