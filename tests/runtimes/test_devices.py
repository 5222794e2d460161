"""The device option of each runtime, as far as a CPU machine can check it: IO binding gives the logits plain runs
give, TensorRT gets one optimization profile over every batch and length, and a GPU that is not there (a CPU build
of torch, onnxruntime without its CUDA provider) is refused in one line, never run on the CPU under a GPU label."""

import numpy as np
import pytest

from slimformer.errors import MissingLibraryError, ModelError
from slimformer.runtimes import check_options, load_predictor
from slimformer.runtimes.onnxruntime import TRT_MAX_BATCH, providers

TEXTS = ["goal match team", "pasta recipe bake flavor", "the new laptop chip and battery are great", "code"]


def test_io_binding_gives_the_same_logits(tiny_onnx):
    plain = load_predictor(tiny_onnx, "onnxruntime", io_binding="false")
    bound = load_predictor(tiny_onnx, "onnxruntime", io_binding="true")
    assert bound.describe()["io_binding"] and not plain.describe()["io_binding"]
    assert plain.describe()["device"] == "cpu"
    for batch in (TEXTS[:1], TEXTS):
        np.testing.assert_array_equal(bound.forward(bound.tokenize(batch)), plain.forward(plain.tokenize(batch)))


def test_tensorrt_gets_one_profile_over_every_batch_and_length(tiny_onnx):
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen = providers("tensorrt", available, tiny_onnx / "model.onnx", max_length=64)
    assert [p if isinstance(p, str) else p[0] for p in chosen] == available
    trt = chosen[0][1]
    assert trt["trt_fp16_enable"] and trt["trt_engine_cache_enable"]
    names = ("input_ids", "attention_mask", "token_type_ids")
    assert trt["trt_profile_min_shapes"] == ",".join(f"{n}:1x1" for n in names)
    assert trt["trt_profile_max_shapes"] == ",".join(f"{n}:{TRT_MAX_BATCH}x64" for n in names)
    assert providers("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_onnxruntime_without_its_gpu_provider_says_which_package_to_install(tiny_onnx, device):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider (onnxruntime-gpu)")
    with pytest.raises(MissingLibraryError) as e:
        load_predictor(tiny_onnx, "onnxruntime", device=device)
    assert str(e.value) == (f"device {device} needs onnxruntime-gpu; this onnxruntime has only "
                            f"{', '.join(onnxruntime.get_available_providers())}: pip uninstall -y onnxruntime && "
                            "pip install 'slimformer[gpu]'")


def test_torch_on_cuda_is_refused_where_torch_sees_no_gpu(tiny_bert):
    import torch

    assert check_options("torch", {"device": "CUDA"}) == {"device": "cuda"}
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here (tests/test_cuda.py runs it)")
    with pytest.raises(ModelError, match=r"^device cuda asked for, but (a CPU-only build of torch|no CUDA GPU is "
                                         r"visible) \(torch .*\); use device=cpu$"):
        load_predictor(tiny_bert, "torch", device="cuda")
    assert load_predictor(tiny_bert, "torch", device="cpu").describe()["device"] == "cpu"
