"""The ``deploysim`` command line: commands only; each calls a workload and prints."""

from deploysim.cli.main import main

__all__ = ["main"]
