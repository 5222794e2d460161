"""The batcher on its own: its cost model, when it waits, what it puts together, how it refuses."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from slimformer.serve.batcher import Batcher, BatchPolicy, CostModel, Item, QueueFull


def test_cost_model_fits_fixed_and_per_text_cost():
    cost = CostModel()
    for n in (1, 2, 4, 8, 16, 32) * 3:
        cost.add(n, 0.002 + 0.0005 * n)
    assert cost.a == pytest.approx(0.002, abs=1e-6) and cost.b == pytest.approx(0.0005, abs=1e-7)
    assert cost.predict(10) == pytest.approx(0.007, abs=1e-6)


def batcher(policy: BatchPolicy, seconds=lambda n: 0.001) -> Batcher:
    def run(texts):
        time.sleep(seconds(len(texts)))
        return np.array([[len(t), 0.0] for t in texts])

    b = Batcher(run, policy, ThreadPoolExecutor(1))
    for n in (1, 8, 32):
        b.cost.add(n, 0.002 + 0.001 * n)  # a = 2 ms, b = 1 ms per text
    return b


def queued(b: Batcher, texts: list[str], ago_s: float = 0.0) -> None:
    now = time.perf_counter()
    loop = asyncio.new_event_loop()
    b.queue += [Item(t, loop.create_future(), now - ago_s) for t in texts]


def test_latency_target_waits_only_when_batches_could_not_keep_up():
    b = batcher(BatchPolicy(max_batch=32, target_p99_s=0.1))
    assert b.batch_cap() == 32  # (50 ms - 2 ms) / 1 ms per text = 48 > 32: max_batch caps it
    queued(b, ["a"])
    now = time.perf_counter()
    assert b.wait_s(now) <= 0  # no arrivals to speak of: a lone request runs at once
    b.arrivals.add(now, 400)  # 400 texts/s: batches of 1 (3 ms) would fall behind, batches of 2 keep up
    wait = b.wait_s(now)
    assert 0 < wait <= 1 / 400 + 1e-9
    b.queue[0].arrived = now - 0.049  # the oldest has no slack left inside half the target
    assert b.wait_s(now) <= 0


def test_latency_target_caps_the_batch_at_half_the_target():
    b = batcher(BatchPolicy(max_batch=64, target_p99_s=0.02))
    assert b.batch_cap() == 8  # (10 ms - 2 ms) / 1 ms per text
    fixed = batcher(BatchPolicy(max_batch=64, max_wait_s=0.005))
    assert fixed.batch_cap() == 64
    queued(fixed, ["a"], ago_s=0.002)
    assert fixed.wait_s(time.perf_counter()) == pytest.approx(0.003, abs=5e-4)


def test_a_long_queue_is_batched_by_similar_length_oldest_first():
    b = batcher(BatchPolicy(max_batch=4, max_wait_s=0))
    texts = ["x" * 50, "y" * 5, "z" * 49, "w" * 6, "v" * 51, "u" * 4, "t" * 48, "s" * 7]
    queued(b, texts)
    first = b._take()
    assert [len(i.text) for i in first] == [50, 49, 51, 48]
    assert [len(i.text) for i in b._take()] == [5, 6, 4, 7]


def test_concurrent_submits_share_batches_and_each_gets_its_rows():
    async def main():
        b = batcher(BatchPolicy(max_batch=16, max_wait_s=0.01, max_queue=40))
        b.start()
        calls = [["a" * (i + 1)] * (1 + i % 3) for i in range(10)]
        results = await asyncio.gather(*(asyncio.gather(*b.submit(texts)) for texts in calls))
        with pytest.raises(QueueFull):
            b.submit(["q"] * 41)
        await b.stop()
        return calls, results, b.cost.samples

    calls, results, samples = asyncio.run(main())
    for texts, rows in zip(calls, results, strict=True):
        assert [r[0] for r in rows] == [len(t) for t in texts]
    assert len(samples) - 3 < 10  # fewer batches than requests: they were coalesced


def test_the_serving_path_imports_no_torch():
    """The server, batcher, load generator and file scorer leave torch to the runtimes that need it."""
    import subprocess
    import sys

    code = ("import sys, slimformer.serve, slimformer.serve.app, slimformer.serve.batcher, slimformer.loadtest, "
            "slimformer.scale.predict, slimformer.serve.process; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_padding_splitter_runs_short_and_long_texts_apart_with_the_same_answers():
    from slimformer.serve.batcher import PaddingSplitter

    calls = []

    def forward(encoded):  # padding-invariant: per row, the sum of its real tokens and their count
        calls.append(encoded["input_ids"].shape)
        mask = encoded["attention_mask"]
        return np.stack([(encoded["input_ids"] * mask).sum(1), mask.sum(1)], axis=1).astype(np.float32)

    lengths = [5, 50, 6, 5, 48]
    ids = np.zeros((5, 50), dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n], mask[row, :n] = row + 1, 1
    encoded = {"input_ids": ids, "attention_mask": mask}
    splitter = PaddingSplitter(forward)
    assert [len(g) for g in splitter.plan(np.array(lengths))] == [5]  # nothing measured yet: one batch
    for tokens in (10, 100, 1000):
        splitter.cost.add(tokens, 0.001 + 1e-5 * tokens)  # a = 1 ms, c = 10 µs per padded token
    groups = splitter.plan(np.array(lengths))
    assert [sorted(g.tolist()) for g in groups] == [[0, 2, 3], [1, 4]]
    calls.clear()
    out = splitter(encoded)
    assert calls == [(3, 6), (2, 50)]  # each group trimmed to its own longest text
    np.testing.assert_array_equal(out, forward(encoded))
