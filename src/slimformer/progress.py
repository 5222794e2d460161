"""Progress bars on stderr (rich), quiet when disabled; one helper used by every long job."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
_enabled = True


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield `update(advance=1, description=None, **fields)`; the bar disappears when done."""
    if not _enabled or not console.is_terminal:  # logs and CI get no half-drawn bars
        yield lambda *a, **k: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[status]}"), console=console,
                  transient=True) as bar:
        task = bar.add_task(description, total=total, status="")

        def update(advance: float = 1, description: str | None = None, status: str | None = None) -> None:
            kwargs = {"description": description} if description else {}
            if status is not None:
                kwargs["status"] = status
            bar.update(task, advance=advance, **kwargs)

        yield update
