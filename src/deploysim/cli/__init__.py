"""The ``deploysim`` command line: commands only; each calls a workload and prints.

Ctrl-C while the CLI starts (imports, config) exits 130 with one line, never a
traceback; the commands that handle an interrupt themselves (``run``) restore
Python's default handler once they are ready to catch it.
"""

import signal
import sys

EXIT_INTERRUPTED = 130


def _interrupted_while_starting(signum: int, frame: object) -> None:
    sys.stderr.write("error: interrupted while starting: nothing was sent\n")
    raise SystemExit(EXIT_INTERRUPTED)


def catch_interrupts() -> None:
    """From here on Ctrl-C raises KeyboardInterrupt again, for the caller to handle."""
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread
        pass


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    try:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    except ValueError:
        pass

from deploysim.cli.main import main  # noqa: E402 - after the handler: this import takes most of a second

__all__ = ["catch_interrupts", "main"]
