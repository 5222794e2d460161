"""Progress bars on stderr (rich), quiet when disabled; one helper used by every long job."""

from __future__ import annotations

import time
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

console = Console(stderr=True, soft_wrap=True)  # logs keep long lines whole
_enabled = True
HEARTBEAT_S = 30.0  # without a terminal: one status line this often, so a log shows a long job is alive


def set_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """Yield `update(advance=1, description=None, **fields)`; the bar disappears when done."""
    if not _enabled:
        yield lambda *a, **k: None
        return
    if not console.is_terminal:  # logs and CI get no half-drawn bars: a status line now and then instead
        yield _heartbeat(description, total)
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


def _heartbeat(description: str, total: int | None) -> Callable[..., None]:
    started = last = time.monotonic()
    state = {"done": 0.0, "description": description, "status": ""}

    def update(advance: float = 1, description: str | None = None, status: str | None = None) -> None:
        nonlocal last
        state["done"] += advance
        state["description"] = description or state["description"]
        state["status"] = state["status"] if status is None else status
        now = time.monotonic()
        if now - last >= HEARTBEAT_S:
            last = now
            count = f"{state['done']:.0f}/{total}" if total else ""
            console.print(f"{state['description']}: {count} {state['status']} ({now - started:.0f} s)".replace(
                "  ", " "), highlight=False, soft_wrap=True)

    return update


def log_line(text: str) -> None:
    """A line that stays: what finished (an epoch, a variant), on a terminal (above any bar) and in logs alike."""
    if _enabled:
        console.print(text, highlight=False, soft_wrap=True)
