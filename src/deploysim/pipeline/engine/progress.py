"""A rich progress bar per deployment: done / total, rate, ETA, errors, tokens (workers only bump counters)."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AbstractContextManager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from deploysim.core.models import Model

TICK_S = 0.25


class RunProgress(AbstractContextManager["RunProgress"]):
    def __init__(self, callers: dict[str, Model], enabled: bool = True) -> None:
        self.callers = callers
        self.enabled = enabled
        self.done = dict.fromkeys(callers, 0)
        self.totals: dict[str, int | None] = dict.fromkeys(callers, None)
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._ticker: asyncio.Task[None] | None = None

    def __enter__(self) -> RunProgress:
        if not self.enabled:
            return self
        console = Console(file=sys.stderr)
        if not console.is_terminal:
            console.width = max(console.width, 140)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("errors {task.fields[errors]}  tokens {task.fields[tokens]}  cache {task.fields[hits]}"),
            console=console,
            transient=False,
        )
        self._progress.__enter__()
        for name in self.callers:
            self._tasks[name] = self._progress.add_task(name, total=None, rate="0.0", errors=0, tokens=0, hits=0)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return self

    def advance(self, name: str, skipped: bool = False) -> None:
        self.done[name] += 1

    def describe(self, name: str, text: str) -> None:
        """Replace a deployment's label (a batched one shows its batches' state)."""
        if self._progress is not None and name in self._tasks:
            self._progress.update(self._tasks[name], description=text)

    def set_totals(self, totals: dict[str, int]) -> None:
        self.totals.update(totals)

    def _refresh(self) -> None:
        if self._progress is None:
            return
        for name, task_id in self._tasks.items():
            stats = self.callers[name].stats
            task = self._progress.tasks[task_id]
            elapsed = task.elapsed or 0.0
            rate = self.done[name] / elapsed if elapsed > 0 else 0.0
            self._progress.update(
                task_id,
                completed=self.done[name],
                total=self.totals[name],
                rate=f"{rate:.1f}",
                errors=stats.errors,
                tokens=stats.prompt_tokens + stats.completion_tokens,
                hits=stats.cache_hits,
            )

    async def _tick(self) -> None:
        while True:
            self._refresh()
            await asyncio.sleep(TICK_S)

    def __exit__(self, *exc: Any) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._progress is not None:
            self._refresh()
            self._progress.__exit__(*exc)
