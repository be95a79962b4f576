"""Progress of long work: rich bars while it runs, plain lines where no bar is shown (docs/architecture.md §8).

    with Progress(enabled) as bar:
        task = bar.add("clip cache", total=len(jobs))
        for job in jobs:
            ...
            bar.advance(task, info=f"loss {loss:.3f}")
        bar.log("done")

A disabled `Progress` accepts the same calls and shows nothing; its `log` prints plain lines unless `quiet`.
"""

from __future__ import annotations

from typing import Any


class Progress:
    """Bars for one or more tasks (description, bar, done/total, time left, a free `info` text), or nothing."""

    def __init__(self, enabled: bool = True, *, transient: bool = False, quiet: bool = False):
        self.quiet = quiet
        self._rich: Any = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=transient)

    def __enter__(self) -> Progress:
        if self._rich:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich:
            self._rich.stop()

    def add(self, description: str, total: int) -> Any:
        """A new bar of `total` steps; returns its handle (None when disabled)."""
        return self._rich.add_task(description, total=total, info="") if self._rich else None

    def advance(self, task: Any, n: int = 1, *, info: str | None = None, description: str | None = None) -> None:
        """`n` more steps of `task` done; `info` / `description` replace the bar's texts."""
        if self._rich:
            texts = {k: v for k, v in (("info", info), ("description", description)) if v is not None}
            self._rich.update(task, advance=n, **texts)

    def remove(self, task: Any) -> None:
        """Take `task`'s bar off the screen."""
        if self._rich:
            self._rich.remove_task(task)

    def log(self, text: str) -> None:
        """A line above the bars; a plain printed line when no bar is shown (nothing when `quiet`)."""
        if self._rich:
            self._rich.console.print(text)
        elif not self.quiet:
            print(text, flush=True)
