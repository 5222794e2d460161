"""Ray Serve and Ray Data on a local Ray (one ray.init for the module, 2 CPUs): the single-process answers."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from conftest import keyword_rows

ray = pytest.importorskip("ray")

from slimformer.metrics import log_softmax  # noqa: E402
from slimformer.runtimes import load_predictor  # noqa: E402
from slimformer.serve.process import free_port  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_serve_answers_like_the_predictor(onnx_bundle):
    from ray import serve

    from slimformer.serve import ServeSettings
    from slimformer.serve.ray_serve import RayOptions, start

    texts = [r["text"] for r in keyword_rows(12, seed=2)]
    predictor = load_predictor(onnx_bundle)
    probs = np.exp(log_softmax(np.concatenate([predictor.logits([t]) for t in texts])))
    port = free_port()
    start(ServeSettings(str(onnx_bundle), port=port, threads=1, max_texts=8, max_wait_ms=2),
          RayOptions.parse(None, 1, None))
    try:
        url = f"http://127.0.0.1:{port}"
        r = httpx.post(url + "/v1/classify", json={"texts": texts[:8], "probabilities": True}, timeout=60)
        assert r.status_code == 200, r.text
        for p, pred in zip(probs[:8], r.json()["predictions"], strict=True):
            assert pred["label"] == predictor.labels[int(p.argmax())]
            np.testing.assert_allclose(list(pred["probabilities"].values()), p, atol=1e-5)
        assert httpx.post(url + "/v1/classify", json={"texts": texts[:9]}).status_code == 422  # same limits
        info = httpx.get(url + "/v1/info").json()
        assert info["batch_invariance"]["flagged"] is False and info["batching"]["policy"] == "ray-serve-batch"
    finally:
        serve.shutdown()


def test_ray_data_writes_what_the_local_run_writes(onnx_bundle, tmp_path):
    from slimformer.scale.predict import predict_file
    from slimformer.scale.ray_data import predict_file_ray

    rows = [{"text": r["text"]} for r in keyword_rows(300, seed=4)]
    rows[7], rows[50] = {"text": ""}, {"text": 12}
    lines = [json.dumps(r) for r in rows]
    lines[99] = "{broken"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    local = predict_file(str(onnx_bundle), src, tmp_path / "local.csv", chunk_size=64)
    remote = predict_file_ray(str(onnx_bundle), src, tmp_path / "ray.csv", threads=1, actors=1)
    assert (remote["scored"], remote["rejected"]) == (local["scored"], local["rejected"]) == (297, 3)
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "local.csv").read_text()
    assert (tmp_path / "ray.rejects.jsonl").read_text() == (tmp_path / "local.rejects.jsonl").read_text()
