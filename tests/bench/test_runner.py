import json
from pathlib import Path

import numpy as np
import pytest

from slimformer.bench.runner import BenchSettings, DataSpec, Variant, remeasure, run_benchmark
from slimformer.errors import LabelMismatchError

SMALL = BenchSettings(warmup=2, latency_samples=12, batch_sizes=(1, 4), throughput_min_s=0.05, throughput_min_texts=8,
                      throughput_repeats=3, cold_start_runs=2, settle_s=0)


@pytest.fixture(scope="module")
def results(tiny_bert, keyword_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    variants = [Variant(str(tiny_bert), threads=1), Variant(str(tiny_bert), threads=2)]
    return run_benchmark(variants, DataSpec(str(keyword_csv)), SMALL, out), out


def test_results_have_every_measurement(results):
    res, out = results
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res))
    assert res["schema_version"] == 3 and res["task"] == "classification"
    assert res["dataset"]["decision_split"] == "validation"
    assert res["dataset"]["held_out"] == ["test"] and res["dataset"]["n"] == {"validation": 24, "test": 24}
    assert "AVX2" in res["machine"]["cpu"]["isa"] or res["machine"]["cpu"]["arch"] != "x86_64"
    for v, threads in zip(res["variants"], (1, 2), strict=True):
        assert v["threads"] == threads and v["machine"]["threads"] == threads
        assert v["predictor"]["threads"] == threads
        for split in ("validation", "test"):
            q = v["quality"][split]
            assert 0 <= q["accuracy"] <= 1 and q["n"] == 24 and q["mode"] in ("batch1", "batched")
            assert q["accuracy"] == min(q["batch1"]["accuracy"], q["batched"]["accuracy"])  # the worse mode
            assert set(q["per_class"]) == {"food", "sport", "tech"}
            assert (q["agreement"] is None) == (v is res["variants"][0])  # the first is the reference
            assert not q["batch_invariance"]["flagged"] and q["batch_invariance"]["n"] == 24  # FP32 torch
            for mode in ("batch1", "batched"):
                assert np.load(out / "answers" / f"{v['name']}.{split}.{mode}.npy").shape == (24, 3)
        for kind in ("model", "end_to_end"):
            lat = v["latency_ms"][kind]
            assert lat["n"] == 12 and 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert [t["batch_size"] for t in v["throughput"]] == [1, 4]
        for t in v["throughput"]:
            assert len(t["runs"]) == 3 and min(t["runs"]) <= t["texts_per_s"] <= max(t["runs"]) and t["spread_pct"] >= 0
            assert t["energy"]["texts"] >= 3 * t["batch_size"]  # the timed repeats, each at least one batch
        fastest = max(v["throughput"], key=lambda t: t["texts_per_s"])
        assert v["energy"] == {"batch_size": fastest["batch_size"], **fastest["energy"]}
        if not Path("/sys/class/powercap").exists():  # this VM: said so, never 0 joules
            assert v["energy"]["joules_per_1k_texts"] is None and "rapl" in v["energy"]["not_readable"]
        assert v["memory"]["peak_vram_mb"] is None  # torch on the CPU never touched a GPU
        assert v["size_mb"] > 0 and v["memory"]["peak_rss_mb"] >= v["memory"]["rss_before_load_mb"] > 0
        cold = v["cold_start"]
        assert len(cold["runs_s"]) == 2 and cold["median_s"] > cold["load_s"] + cold["first_answer_s"]
    assert res["variants"][0]["agreement"] is None
    agree = res["variants"][1]["agreement"]  # same weights, other thread count: same answers
    assert agree["reference"] == res["variants"][0]["name"] and agree["split"] == "validation"
    assert agree["label_flip_rate"] == 0 and agree["max_abs_logit_diff"] < 1e-4


def test_each_variant_runs_in_its_own_process(results):
    res, _ = results
    assert all(v["memory"]["rss_before_load_mb"] < v["memory"]["peak_rss_mb"] for v in res["variants"])
    assert res["variants"][0]["load_s"] > 0 and res["variants"][1]["load_s"] > 0


def test_a_model_is_never_scored_on_foreign_labels(sentiment_model, keyword_csv, tmp_path):
    with pytest.raises(LabelMismatchError, match="does not know"):
        run_benchmark([Variant(str(sentiment_model))], DataSpec(str(keyword_csv)), SMALL, tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_remeasure_alternates_the_pair_in_fresh_processes(results, keyword_csv, tmp_path):
    res, _ = results
    base, cand = (v["name"] for v in res["variants"])
    [check] = remeasure(res, [(base, cand)], DataSpec(str(keyword_csv)), SMALL, tmp_path, rounds=2)
    again = json.loads((tmp_path / "results.json").read_text())
    assert [v["name"] for v in again["variants"]] == [f"{base}@1", f"{cand}@1", f"{base}@2", f"{cand}@2"]
    assert all("cold_start" not in v and v["threads"] in (1, 2) for v in again["variants"])
    p50 = {v["name"]: v["latency_ms"]["end_to_end"]["p50"] for v in again["variants"]}
    assert check["baseline"] == base and check["candidate"] == cand and len(check["rounds"]) == 2
    for r, row in enumerate(check["rounds"], 1):
        assert row["baseline_p50_ms"] == p50[f"{base}@{r}"]
        assert row["speedup"] == round(p50[f"{base}@{r}"] / p50[f"{cand}@{r}"], 2)
