"""Progress when the output is no terminal (CI, `make demo | tee`): status lines instead of hidden bars."""

from __future__ import annotations

import io

from rich.console import Console

from slimformer import progress


def test_without_a_terminal_a_long_job_prints_status_lines_and_finished_steps(monkeypatch):
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    monkeypatch.setattr(progress, "console", console)
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.0)  # every update is due
    with progress.progress_bar("training minilm-l6 on trec6", 4) as update:
        update(status="epoch 1/2 loss 0.512")
        update(advance=0, description="training (resumed)")
    progress.log_line("epoch 1/2: validation accuracy 93.10%")
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("training minilm-l6 on trec6: 1/4 epoch 1/2 loss 0.512 (")
    assert lines[1].startswith("training (resumed): 1/4 epoch 1/2 loss 0.512")
    assert lines[2] == "epoch 1/2: validation accuracy 93.10%"


def test_heartbeats_are_throttled(monkeypatch):
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    monkeypatch.setattr(progress, "console", console)
    monkeypatch.setattr(progress, "HEARTBEAT_S", 3600.0)
    with progress.progress_bar("benchmarking", 100) as update:
        for _ in range(100):
            update()
    assert console.file.getvalue() == ""  # a quick job prints nothing between its own result lines
