"""`slimformer serve` as a client meets it: a real server process on a loopback port, real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import numpy as np
import pytest

from slimformer.metrics import log_softmax
from slimformer.runtimes import load_predictor

from .conftest import INVARIANCE, Server

LIMITS = ("--max-texts", "8", "--max-chars", "300", "--max-body-bytes", "4096")


@pytest.fixture(scope="module")
def server(onnx_bundle):
    s = Server(onnx_bundle, *LIMITS, "--max-wait-ms", "20")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def expected(onnx_bundle, texts):
    """Each text's probabilities at batch 1 from the Predictor itself."""
    predictor = load_predictor(onnx_bundle, threads=1)
    probs = np.exp(log_softmax(np.concatenate([predictor.logits([t]) for t in texts])))
    return {t: p for t, p in zip(texts, probs, strict=True)}, predictor.labels


def classify(url: str, texts: list[str], **extra) -> httpx.Response:
    return httpx.post(url + "/v1/classify", json={"texts": texts, **extra}, timeout=30)


def test_answers_equal_the_predictors(server, texts, expected):
    probs, labels = expected
    r = classify(server.url, texts[:5], probabilities=True)
    assert r.status_code == 200, r.text
    for text, pred in zip(texts[:5], r.json()["predictions"], strict=True):
        assert pred["label"] == labels[int(probs[text].argmax())]
        assert pred["score"] == pytest.approx(float(probs[text].max()), abs=1e-5)
        assert list(pred["probabilities"]) == labels
        np.testing.assert_allclose(list(pred["probabilities"].values()), probs[text], atol=1e-5)
    assert "probabilities" not in classify(server.url, texts[:1]).json()["predictions"][0]


def test_concurrent_clients_each_get_their_own_answers_batched(server, texts, expected):
    """Batch-invariant bundle: served labels equal batch-1 labels even when requests share batches."""
    probs, labels = expected

    async def client(i: int, http: httpx.AsyncClient) -> list[tuple[str, dict]]:
        mine = [texts[(i * 7 + k) % len(texts)] for k in range(1 + i % 3)]
        r = await http.post("/v1/classify", json={"texts": mine})
        assert r.status_code == 200, r.text
        return list(zip(mine, r.json()["predictions"], strict=True))

    async def run() -> list:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            return await asyncio.gather(*(client(i, http) for i in range(40)))

    before = metric(server.url, "slimformer_batch_size_count")
    answers = [pair for result in asyncio.run(run()) for pair in result]
    assert len(answers) == sum(1 + i % 3 for i in range(40))
    for text, pred in answers:
        assert pred["label"] == labels[int(probs[text].argmax())]
        assert pred["score"] == pytest.approx(float(probs[text].max()), abs=1e-5)
    batches = metric(server.url, "slimformer_batch_size_count") - before
    assert batches < len(answers) / 2, f"{len(answers)} texts ran in {batches} batches: not coalesced"


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(url + "/metrics").text
    line = next(ln for ln in text.splitlines() if ln.startswith(name + labels + " "))
    return float(line.split()[-1])


def test_info_reports_batch_invariance_and_limits(server, serve, unmeasured_bundle):
    info = httpx.get(server.url + "/v1/info").json()
    assert info["batch_invariance"] == INVARIANCE and info["state"] == "ready"
    assert info["limits"]["max_texts"] == 8 and info["batching"]["policy"] == "fixed-wait"
    assert info["batching"]["cost_model"]["batches"] > 0 and info["threads_per_worker"] == 1
    assert "max Δlogit 2e-06 in padded batches, over 64 texts" in server.output()
    other = serve(unmeasured_bundle)
    assert httpx.get(other.url + "/v1/info").json()["batch_invariance"] == "not measured"
    assert "batch invariance: not measured" in other.output()


@pytest.mark.parametrize("body, status, needle", [
    ({"texts": ["a"] * 9}, 422, "List should have at most 8 items"),
    ({"texts": ["ok", "x" * 301]}, 422, "String should have at most 300 characters"),
    ({"texts": []}, 422, "at least 1 item"),
    ({"texts": ["fine", ""]}, 422, "at least 1 character"),
    ({"texts": "not a list"}, 422, "valid list"),
    ({"texts": [1, 2]}, 422, "valid string"),
    ({"texts": ["a"], "probabilities": "yes"}, 422, "valid boolean"),
    ({"texts": ["a"], "extra": 1}, 422, "Extra inputs"),
    ({}, 422, "Field required"),
    ([1], 422, "valid dictionary"),
])
def test_limits_and_malformed_bodies(server, body, status, needle):
    r = httpx.post(server.url + "/v1/classify", json=body)
    assert r.status_code == status and needle in json.dumps(r.json()["detail"]), r.text


def test_body_size_limit_and_broken_json(server):
    big = json.dumps({"texts": ["word " * 50] * 20})
    r = httpx.post(server.url + "/v1/classify", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 4096 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(10):
            yield b" " * 1000

    json_type = {"content-type": "application/json"}
    r = httpx.post(server.url + "/v1/classify", content=chunks(), headers=json_type)
    assert r.status_code == 413
    r = httpx.post(server.url + "/v1/classify", content=b'{"texts": ["a",', headers=json_type)
    assert r.status_code == 422 and "JSON decode error" in r.text
    assert metric(server.url, "slimformer_requests_total", '{status="413"}') >= 2


def test_health_ready_metrics(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    text = httpx.get(server.url + "/metrics").text
    for name in ("slimformer_requests_total", "slimformer_request_seconds_bucket", "slimformer_batch_size_bucket",
                 "slimformer_queue_depth", "slimformer_model_seconds_bucket"):
        assert name in text


def test_api_key(serve, onnx_bundle, tmp_path):
    key = "k3y-" + "x" * 28
    (tmp_path / "key").write_text(key + "\n")
    s = serve(onnx_bundle, "--api-key-file", str(tmp_path / "key"))
    assert classify(s.url, ["a"]).status_code == 401
    r = httpx.post(s.url + "/v1/classify", json={"texts": ["a"]}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.post(s.url + "/v1/classify", json={"texts": ["a"]},
                      headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert httpx.post(s.url + "/v1/classify", json={"texts": ["a"]}, headers={"X-API-Key": key}).status_code == 200
    assert httpx.get(s.url + "/v1/info").status_code == 401
    assert httpx.get(s.url + "/healthz").status_code == 200  # probes need no key


def test_overload_gives_503_then_recovers(serve, onnx_bundle, texts):
    s = serve(onnx_bundle, "--max-queue", "16", "--max-batch", "1", "--max-wait-ms", "0")

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=s.url, timeout=30,
                                     limits=httpx.Limits(max_connections=200)) as http:
            return await asyncio.gather(*(http.post("/v1/classify", json={"texts": texts[:8]}) for _ in range(100)))

    codes = [r.status_code for r in asyncio.run(flood())]
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
    rejected = next(r for r in asyncio.run(flood()) if r.status_code == 503)
    assert int(rejected.headers["retry-after"]) >= 1 and "retry later" in rejected.json()["detail"]
    assert s.proc.poll() is None
    assert classify(s.url, texts[:8]).status_code == 200  # recovered


def test_timeout_gives_504(serve, onnx_bundle):
    s = serve(onnx_bundle, "--max-wait-ms", "2000", "--timeout-s", "0.2")
    r = classify(s.url, ["a lone text waits for company longer than its timeout"])
    assert r.status_code == 504 and "0.2 s" in r.json()["detail"]
    assert metric(s.url, "slimformer_requests_total", '{status="504"}') == 1


def test_sigterm_finishes_requests_in_flight_then_exits_0(serve, onnx_bundle, texts):
    s = serve(onnx_bundle, "--max-wait-ms", "1500")  # the request below sits in the batcher for 1.5 s
    answers = []
    t = threading.Thread(target=lambda: answers.append(classify(s.url, texts[:3])))
    t.start()
    time.sleep(0.5)
    assert s.stop() == 0, s.output()
    t.join(10)
    assert answers and answers[0].status_code == 200 and len(answers[0].json()["predictions"]) == 3
    with pytest.raises(httpx.TransportError):
        httpx.get(s.url + "/healthz", timeout=2)


def test_a_bundle_that_does_not_load_exits_2_with_one_line(serve, onnx_bundle, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(onnx_bundle, broken)
    (broken / "model.onnx").write_bytes(b"not a model")
    s = serve(broken, wait_ready=False)
    assert s.proc.wait(60) == 2
    assert "error:" in s.output() and "did not load" in s.output() and "Traceback" not in s.output()
    missing = serve(tmp_path / "nope", wait_ready=False)
    assert missing.proc.wait(60) == 2 and "bundle not found" in missing.output()


def test_workers_share_the_port_and_sum_their_metrics(serve, onnx_bundle, texts):
    s = serve(onnx_bundle, "--workers", "2")
    for i in range(12):
        assert classify(s.url, texts[i:i + 2]).status_code == 200
    assert metric(s.url, "slimformer_texts_total") == 24  # both workers' counts, whichever answers /metrics
    info = httpx.get(s.url + "/v1/info").json()
    assert info["workers"] == 2 and info["threads_per_worker"] == 1
    assert s.stop() == 0, s.output()


def test_an_onnx_bundle_is_served_without_torch(onnx_bundle):
    """Loaded and warmed up as a worker does it, in a fresh process: neither torch nor transformers imported."""
    import subprocess
    import sys

    code = ("import sys; from slimformer.serve.app import Model, ServeSettings; "
            f"m = Model(ServeSettings({str(onnx_bundle)!r}, threads=1, workers=1)); m._load(); "
            "print(m.predictor.runtime, sorted(k for k in ('torch', 'transformers') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "onnxruntime []"
