"""Sentence embeddings end to end: retrieval metrics by hand, optimize on a tiny encoder, export, predict, serve."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import keyword_rows, write_csv
from serve.conftest import Server
from test_cli import assert_one_line_error, run

from slimformer.loadtest import served_path
from slimformer.metrics import (
    cosine_rows,
    neighbour_recall,
    paired_difference,
    precision_at_k,
    vector_invariance,
)
from slimformer.optimize.select import Budget
from slimformer.runtimes import load_predictor
from slimformer.tasks.scoring import EmbeddingScoring, scoring_for

# four texts on a circle: 0 and 1 close, 2 and 3 close, 1 nearer to 2 than 0 is
VECTORS = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
LABELS = np.array([0, 0, 1, 1])


def test_retrieval_metrics_are_the_hand_computed_ones():
    # nearest other text: 0 -> 1, 1 -> 0 (cos .8 vs .6 to 2), 2 -> 3 (cos .8), 3 -> 2
    np.testing.assert_allclose(precision_at_k(VECTORS, LABELS, 1), [1, 1, 1, 1])
    # two nearest: 0 -> {1, 2} (cos .8, 0), 1 -> {0, 2} (.8, .6), 2 -> {3, 1} (.8, .6), 3 -> {2, 1} (.8, 0)
    np.testing.assert_allclose(precision_at_k(VECTORS, LABELS, 2), [0.5, 0.5, 0.5, 0.5])
    # move text 0 next to text 2: its nearest becomes 2 (another label), and 2's nearest becomes 0 (cos .995 > .8)
    moved = VECTORS.copy()
    moved[0] = [0.1, 1.0]
    np.testing.assert_allclose(precision_at_k(moved, LABELS, 1), [0, 1, 0, 1])
    np.testing.assert_allclose(neighbour_recall(moved, VECTORS, 1), [0, 1, 0, 1])
    np.testing.assert_allclose(cosine_rows(moved, VECTORS)[1:], 1.0)
    assert cosine_rows(moved, VECTORS)[0] == pytest.approx(0.1 / np.hypot(0.1, 1.0))
    still = vector_invariance(VECTORS, VECTORS + 1e-7, k=1)
    assert not still["flagged"] and still["neighbour_change_rate"] == 0
    shifted = vector_invariance(VECTORS, moved, k=1)
    assert shifted["flagged"] and shifted["neighbour_change_rate"] == pytest.approx(0.5)
    assert shifted["max_abs_diff"] == pytest.approx(1.0)


def test_paired_difference_on_graded_scores_and_the_scoring_object():
    d = paired_difference(np.array([1.0, 0.5, 0.5, 0.2]), np.array([0.9, 0.5, 0.7, 0.0]))
    assert d["drop_points"] == pytest.approx(100 * (0.1 + 0 - 0.2 + 0.2) / 4)
    assert (d["b"], d["c"], d["n"]) == (2, 1, 4) and d["ci95"][0] <= d["drop_points"] <= d["ci95"][1]
    scoring = scoring_for("embedding")
    assert isinstance(scoring, EmbeddingScoring) and scoring.metric == "precision_at_10"
    truth = np.array([0, 0, 0, 1, 1, 1] * 3)
    vectors = np.eye(2)[truth] + 0.01 * np.arange(18)[:, None]  # each text nearest to its own label's
    assert scoring.score(vectors, truth)["precision_at_10"] == pytest.approx(8 / 10)  # 8 others share the label
    assert set(scoring.per_class(vectors, truth, ["a", "b"])) == {"a", "b"}
    split = {"agreement": scoring.agreement(vectors * 0.5 + 0.5, vectors)}  # a different direction
    assert split["agreement"]["mean_cosine"] < 0.99 and scoring.misses(split, Budget(min_cosine=0.99))[0]["below"]
    assert scoring.misses(split, Budget(min_cosine=None)) == []


@pytest.fixture(scope="module")
def embed_run(tmp_path_factory, tiny_encoder):
    """`slimformer optimize --task embedding` on the tiny encoder (two variants beside the baseline, 1 thread)."""
    root = tmp_path_factory.mktemp("embed")
    data = write_csv(root / "topics.csv", keyword_rows(300, seed=1))
    proc = run("optimize", "--model", str(tiny_encoder), "--task", "embedding", "--data", str(data), "--threads", "1",
               "--only", "ort-fp32,ort-int8-dynamic", "--latency-samples", "10", "--out", str(root / "run"))
    assert proc.returncode == 0, proc.stderr
    return root, data


def test_optimize_judges_embeddings_by_retrieval_and_agreement(embed_run, tiny_encoder):
    root, data = embed_run
    results = json.loads((root / "run" / "results.json").read_text())
    assert results["task"] == "embedding" and results["schema_version"] == 3
    sel = results["selection"]
    assert all("cls-only" not in b["recipe"] for b in sel["built"])  # it reads one token; embeddings pool all
    assert sel["budget_text"].startswith("precision@10 drop <= 1 points") and "mean cosine" in sel["budget_text"]
    rows = {r["name"]: r for r in sel["rows"]}
    base = rows["teacher-torch-fp32-t1"]
    assert base["metric"] == "precision_at_10" and 0 < base["quality"] <= 1 and base["drop_points"] == 0
    for r in rows.values():
        for split in ("validation", "test"):
            s = r["splits"][split]
            assert 0.99 < s["agreement"]["mean_cosine"] <= 1 + 1e-6 and 0.5 < s["agreement"]["recall_at_10"] <= 1
    onnx = rows["teacher-ort-fp32-t1"]["splits"]["validation"]
    assert onnx["drop_points"] == 0 and onnx["agreement"]["recall_at_10"] == 1  # the same vectors within 1e-6
    # quality is recomputed from the answers kept on disk: the baseline's own precision@10 by hand
    vectors = np.load(root / "run" / "answers" / "teacher-torch-fp32-t1.validation.batch1.npy")
    from slimformer.data import load_dataset

    truth = load_dataset(str(data))["validation"].labels
    by_hand = float(precision_at_k(vectors, truth).mean())
    assert base["splits"]["validation"]["precision_at_10"] == pytest.approx(by_hand)
    assert sel["recommended"] in rows and "precision@10" in (root / "run" / "report.md").read_text()
    wrong = run("optimize", "--model", str(tiny_encoder), "--task", "classification", "--data", str(data),
                "--out", str(root / "wrong"))
    assert_one_line_error(wrong, "is a model for embedding, not classification")


@pytest.fixture(scope="module")
def embed_bundle(embed_run):
    root, _ = embed_run
    bundle = root / "bundle"
    proc = run("export", str(root / "run"), "--variant", "teacher-ort-fp32-t1", "--out", str(bundle))
    assert proc.returncode == 0, proc.stderr
    return bundle


def test_predict_writes_the_vectors_to_jsonl_and_parquet(embed_bundle, tmp_path):
    texts = [r["text"] for r in keyword_rows(20, seed=5)]
    (tmp_path / "in.txt").write_text("\n".join(texts[:10] + [""] + texts[10:]) + "\n")
    expected = np.asarray(load_predictor(embed_bundle).predict(texts))
    assert expected.shape == (20, 32)
    proc = run("predict", str(embed_bundle), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "v.jsonl"))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [x["row"] for x in lines] == [*range(10), *range(11, 21)] and lines[0]["text"] == texts[0]
    np.testing.assert_allclose([x["embedding"] for x in lines], expected, atol=1e-5)
    proc = run("predict", str(embed_bundle), "--input", str(tmp_path / "in.txt"), "--out", str(tmp_path / "v.parquet"))
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(tmp_path / "v.parquet")
    assert str(table.schema.field("embedding").type) == "list<element: float>"
    np.testing.assert_allclose(np.array(table["embedding"].to_pylist()), expected, atol=1e-5)
    assert_one_line_error(run("predict", str(embed_bundle), "--input", str(tmp_path / "in.txt"), "--out",
                              str(tmp_path / "v.csv")), "vectors", ".parquet")


def test_the_server_embeds_and_names_the_right_endpoint(embed_bundle):
    texts = [r["text"] for r in keyword_rows(6, seed=9)]
    expected = np.asarray(load_predictor(embed_bundle, threads=1).predict(texts, batch_size=1))
    server = Server(Path(embed_bundle))
    try:
        r = httpx.post(server.url + "/v1/embed", json={"texts": texts}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dim"] == 32 and body["model"] == "teacher-ort-fp32-t1"
        np.testing.assert_allclose(body["embeddings"], expected, atol=1e-5)
        wrong = httpx.post(server.url + "/v1/classify", json={"texts": texts}, timeout=30)
        assert wrong.status_code == 404 and "POST /v1/embed" in wrong.json()["detail"]
        assert httpx.post(server.url + "/v1/embed", json={"texts": texts, "probabilities": True}).status_code == 422
        paths = httpx.get(server.url + "/openapi.json").json()["paths"]
        assert "/v1/embed" in paths and "/v1/classify" not in paths
        info = httpx.get(server.url + "/v1/info").json()
        assert info["task"] == "embedding" and "neighbour_change_rate" in info["batch_invariance"]
        assert served_path(server.url) == "/v1/embed"  # what `slimformer loadtest` sends its queries to
    finally:
        server.stop()
