"""The GPU path on a real CUDA GPU: detection, PyTorch fp32/fp16/bf16 and NF4 on the device, ONNX Runtime's CUDA
(and TensorRT) execution providers with IO binding, peak VRAM and NVML energy in a benchmark, the GPU matrix in
`optimize`, and AMP training. Every test here is skipped where torch sees no CUDA GPU, for that one reason.

    python -m pytest -q tests/test_cuda.py      # on a machine with an NVIDIA GPU, a CUDA build of torch,
                                                # onnxruntime-gpu and nvidia-ml-py (pip install '.[all,gpu,test]')
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TOPICS, keyword_rows, make_tiny_classifier

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a CUDA GPU (torch.cuda.is_available() is False)")]

TEXTS = [r["text"] for r in keyword_rows(24, seed=5)]
LABELS = sorted(TOPICS)


def ort_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def context(keyword_csv):
    from slimformer.data import load_dataset
    from slimformer.techniques import BuildContext

    ds = load_dataset(str(keyword_csv))
    return BuildContext(calibration_texts=ds["train"].texts, check_texts=ds["validation"].texts,
                        calibration_fingerprint=ds.fingerprint)


@pytest.fixture(scope="module")
def model64(tmp_path_factory):
    """hidden 64: bitsandbytes' kernels want blocked shapes."""
    return make_tiny_classifier(tmp_path_factory.mktemp("m") / "bert64", LABELS, hidden=64)


def test_the_gpu_is_in_the_fingerprint_of_every_command():
    from test_cli import run

    from slimformer import hardware

    gpu = hardware.fingerprint()["gpu"]
    assert gpu["name"] == torch.cuda.get_device_name(0) and gpu["memory_mb"] > 1000
    major, minor = torch.cuda.get_device_capability(0)
    assert gpu["compute_capability"] == f"{major}.{minor}" and gpu["driver"]
    doctor = json.loads(run("doctor", "--json").stdout)
    assert doctor["machine"]["gpu"]["name"] == gpu["name"]
    assert {"torch-fp32-cuda", "torch-fp16-cuda", "torch-nf4-cuda"} <= {c["name"] for c in doctor["candidates"]}


@pytest.mark.parametrize("recipe, dtype, atol", [("", "float32", 1e-4), ("fp16", "float16", 0.05),
                                                 ("bf16", "bfloat16", 0.1)])
def test_torch_runs_on_the_gpu_in_each_precision(model64, context, recipe, dtype, atol):
    from slimformer.runtimes import load_predictor
    from slimformer.techniques import build, parse_recipe

    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    path = build(model64, parse_recipe(recipe), context=context).path if recipe else model64
    gpu = load_predictor(path, "torch", device="cuda")
    assert gpu.describe()["device"] == "cuda:0" and gpu.describe()["precision"] == dtype
    assert all(p.is_cuda for p in gpu.model.parameters())
    np.testing.assert_allclose(gpu.logits(TEXTS), load_predictor(model64, "torch").logits(TEXTS), atol=atol)


def test_nf4_with_double_quantization_on_the_gpu(model64, context):
    pytest.importorskip("bitsandbytes")
    from slimformer.runtimes import load_predictor
    from slimformer.techniques import build, parse_recipe

    artifact = build(model64, parse_recipe("nf4"), context=context)
    assert artifact.manifest["steps"][0]["stats"]["double_quant"]
    gpu = load_predictor(artifact.path, "torch", device="cuda")
    assert "Linear4bit" in gpu.describe()["quantized_modules"] and gpu.describe()["device"] == "cuda:0"
    np.testing.assert_allclose(gpu.logits(TEXTS), load_predictor(model64, "torch").logits(TEXTS), atol=0.3)


@pytest.mark.parametrize("recipe, atol", [("onnx", 1e-3), ("onnx,fp16", 0.05),
                                          ("onnx,ort-optimize,int8-dynamic", 0.3)])
def test_onnxruntime_cuda_provider_with_io_binding(model64, context, recipe, atol):
    if not ort_cuda():
        pytest.skip("onnxruntime has no CUDAExecutionProvider (pip install 'slimformer[gpu]')")
    from slimformer.runtimes import load_predictor
    from slimformer.techniques import build, parse_recipe

    artifact = build(model64, parse_recipe(recipe), context=context)
    gpu = load_predictor(artifact.path, "onnxruntime", device="cuda")
    info = gpu.describe()
    assert info["providers"][0] == "CUDAExecutionProvider" and info["io_binding"] and info["disabled_optimizers"] == []
    np.testing.assert_allclose(gpu.logits(TEXTS), load_predictor(model64, "torch").logits(TEXTS), atol=atol)


def test_tensorrt_provider_where_there_is_one(model64, context):
    from slimformer import hardware
    from slimformer.runtimes import load_predictor
    from slimformer.techniques import build, parse_recipe

    if "TensorrtExecutionProvider" not in (hardware.gpu() or {}).get("execution_providers", []):
        pytest.skip("no TensorRT execution provider here")
    artifact = build(model64, parse_recipe("onnx"), context=context)
    gpu = load_predictor(artifact.path, "onnxruntime", device="tensorrt")
    assert gpu.describe()["providers"][0] == "TensorrtExecutionProvider"
    np.testing.assert_allclose(gpu.logits(TEXTS), load_predictor(model64, "torch").logits(TEXTS), atol=0.05)


def test_benchmark_on_the_gpu_measures_vram_energy_and_large_batches(model64, keyword_csv, tmp_path):
    from slimformer.bench.runner import BenchSettings, DataSpec, Variant, run_benchmark

    settings = BenchSettings(warmup=2, latency_samples=12, batch_sizes=(1, 32, 256), throughput_min_s=0.2,
                             throughput_min_texts=256, throughput_repeats=2, cold_start_runs=0, settle_s=0)
    variants = [Variant(str(model64), "torch", name="cpu"), Variant(str(model64), "torch", name="cuda",
                                                                       options={"device": "cuda"})]
    res = run_benchmark(variants, DataSpec(str(keyword_csv)), settings, tmp_path)
    cpu, cuda = res["variants"]
    assert cuda["predictor"]["device"] == "cuda:0" and cpu["predictor"]["device"] == "cpu"
    assert cuda["memory"]["peak_vram_mb"] > 0 and cpu["memory"]["peak_vram_mb"] is None
    assert cuda["agreement"]["label_flip_rate"] == 0 and cuda["agreement"]["max_abs_logit_diff"] < 1e-3
    assert [t["batch_size"] for t in cuda["throughput"]] == [1, 32, 256]
    for v in (cpu, cuda):  # every variant: NVML's joules (or why not), RAPL's where readable
        energy = v["energy"]
        assert "nvml" in energy["sources"] or "nvml" in energy["not_readable"]
        assert energy["joules_per_1k_texts"] is None or energy["joules_per_1k_texts"] > 0
    if "nvml" in cuda["energy"]["sources"]:
        assert cuda["memory"]["peak_vram_nvml_mb"] > 0


def test_optimize_builds_the_gpu_matrix_and_reports_cpu_and_gpu_in_one_table(model64, keyword_csv, tmp_path):
    from slimformer.bench.runner import BenchSettings, DataSpec
    from slimformer.optimize import OptimizeSettings, optimize

    quick = BenchSettings(latency_samples=12, warmup=2, throughput_min_s=0.05, throughput_min_texts=16,
                          throughput_repeats=2, cold_start_runs=0, settle_s=0.0)  # default batch sizes: the GPU's
    optimize(str(model64), DataSpec(str(keyword_csv)), tmp_path / "run",
             OptimizeSettings(threads=(1,), only=("torch-fp16-cuda",), bench=quick, cold_start_runs=0))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["settings"]["batch_sizes"][-1] == 256
    names = [v["name"] for v in results["variants"]]
    assert names == ["teacher-torch-fp32-t1", "teacher-torch-fp16-cuda-t1"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "texts/s (batch 1/8/32/128/256)" in report and "energy / 1k texts" in report and "device=cuda" in report


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_amp_training_on_the_gpu(model64, keyword_csv, precision):
    from transformers import AutoModelForSequenceClassification

    from slimformer.data import load_dataset
    from slimformer.models import load_tokenizer
    from slimformer.training import TrainConfig, fit

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = AutoModelForSequenceClassification.from_pretrained(model64)
    record = fit(model, load_tokenizer(str(model64)), load_dataset(str(keyword_csv)),
                 TrainConfig(epochs=2, lr=3e-3, max_length=16, precision=precision), "amp")
    assert record["precision"] == {"fp16": "float16", "bf16": "bfloat16"}[precision]
    assert next(model.parameters()).is_cuda and all(np.isfinite(h["train_loss"]) for h in record["history"])
    assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]
