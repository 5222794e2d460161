import json
import subprocess
import sys
from pathlib import Path

from test_cli import run

from slimformer.hardware import gpu_text
from slimformer.recipes import advice, batch_sizes, candidates

OLD_CPU = {"model": "old", "arch": "x86_64", "isa": ["AVX2", "FMA"], "cores": 4}
NEW_CPU = {"model": "new", "arch": "x86_64", "isa": ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16"], "cores": 2}
H100 = {"name": "NVIDIA H100", "memory_mb": 81559, "driver": "560.35.03", "cuda_driver": "12.6",
        "compute_capability": "9.0", "count": 1, "source": "nvml",
        "execution_providers": ["CUDAExecutionProvider", "TensorrtExecutionProvider"]}
T4 = {"name": "Tesla T4", "memory_mb": 15360, "driver": "535.1", "cuda_driver": "12.2", "compute_capability": "7.5",
      "count": 1, "source": "torch", "execution_providers": []}  # and a CPU build of onnxruntime


def test_advice_follows_the_instruction_set():
    old = " ".join(advice(OLD_CPU))
    assert "no VNNI" in old and "may not pay" in old and "bf16 variants skipped" in old
    new = " ".join(advice(NEW_CPU, gpu=H100))
    assert "VNNI present" in new and "BF16 present" in new and "fp16" in new
    assert "NVIDIA H100 (80 GiB, compute capability 9.0, driver 560.35.03)" in new and "batch 256" in new
    t4 = " ".join(advice(NEW_CPU, gpu=T4))
    assert "no bf16" in t4 and "pip uninstall -y onnxruntime && pip install 'slimformer[gpu]'" in t4


def test_candidates_follow_the_hardware():
    old = {c.name: c for c in candidates(OLD_CPU)}
    assert "uint8" in old["ort-int8-dynamic"].recipe and "torch-bf16" not in old and "torch-nf4" not in old
    assert "ov-int8-bf16" not in old and old["ov-int8"].options == {"precision": "f32"}
    new = {c.name: c for c in candidates(NEW_CPU)}
    assert "weight_type=int8" in new["ort-int8-dynamic"].recipe and "torch-bf16" in new and "ov-bf16" in new
    assert new["ov-int8-bf16"].recipe == new["ov-int8"].recipe and new["ov-int8-bf16"].options == {"precision": "bf16"}
    assert list(old)[0] == "torch-fp32"  # the baseline comes first


def test_a_gpu_adds_its_own_matrix_after_the_cpu_one():
    cpu = [c.name for c in candidates(NEW_CPU)]
    h100 = {c.name: c for c in candidates(NEW_CPU, gpu=H100)}
    assert list(h100)[:len(cpu)] == cpu  # one table: CPU variants, then the GPU's
    gpu = set(h100) - set(cpu)
    assert gpu == {"torch-fp32-cuda", "torch-fp16-cuda", "torch-bf16-cuda", "torch-nf4-cuda", "ort-fp32-cuda",
                   "ort-fp16-cuda", "ort-int8-dynamic-cuda", "ort-trt-fp16"}
    assert all(h100[n].options == {"device": "cuda"} for n in gpu - {"ort-trt-fp16"})  # on the GPU, never the CPU
    assert h100["ort-trt-fp16"].options == {"device": "tensorrt"} and "slower" in h100["ort-int8-dynamic-cuda"].why
    t4 = {c.name for c in candidates(NEW_CPU, gpu=T4)} - set(cpu)
    assert t4 == {"torch-fp32-cuda", "torch-fp16-cuda", "torch-nf4-cuda"}  # no bf16 below 8.0; no CUDA EP
    assert batch_sizes(H100)[-1] == 256 and batch_sizes(None) == (1, 8, 32)


def test_gpu_text_names_model_memory_capability_and_driver():
    assert gpu_text(None) == "none" and gpu_text("NVIDIA A100") == "NVIDIA A100"  # results from before
    assert gpu_text(dict(H100, count=2)) == "2 x NVIDIA H100 (80 GiB, compute capability 9.0, driver 560.35.03)"


def test_doctor_prints_fingerprint_and_candidates():
    proc = run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["machine"]["cpu"]["cores"] >= 1 and info["advice"] and info["candidates"][0]["name"] == "torch-fp32"
    if not Path("/sys/class/powercap").exists():  # a VM: no RAPL, said in words
        assert info["energy_counters"]["rapl"].startswith("no RAPL package counters here")
    gpu = info["machine"]["gpu"]
    assert gpu is None or gpu["memory_mb"] > 0 and gpu["compute_capability"] and gpu["name"]
    assert (gpu is None) == all("cuda" not in c["name"] for c in info["candidates"])


def test_gpu_detection_imports_nothing_without_a_driver_and_asks_torch_only_where_installed(tmp_path):
    """No NVIDIA driver: neither NVML nor torch is imported to find nothing. With the driver's files present, NVML is
    asked first, then torch (a CPU build here: no GPU either way)."""
    code = """
import json, sys
from slimformer import hardware
sys.argv[1:] and setattr(hardware, "NVIDIA_DEVICE_FILES", tuple(sys.argv[1:]))
gpu = hardware.fingerprint()["gpu"]
print(json.dumps({"gpu": gpu, "torch": "torch" in sys.modules, "pynvml": "pynvml" in sys.modules}))
"""
    (tmp_path / "nvidiactl").touch()
    runs = {}
    for name, args in (("none", ["/nonexistent/nvidiactl"]), ("driver", [str(tmp_path / "nvidiactl")])):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["none"] == {"gpu": None, "torch": False, "pynvml": False}
    import torch

    if not torch.cuda.is_available():
        assert runs["driver"]["gpu"] is None and runs["driver"]["torch"]  # torch asked, since it is installed


def test_gpus_hidden_from_cuda_are_not_offered(monkeypatch):
    from slimformer import hardware

    for value, visible in (("", []), ("1, 2", ["1", "2"]), ("0,-1,1", ["0"]), ("GPU-5f1c", ["GPU-5f1c"])):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert hardware._visible_devices() == visible
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(hardware, "nvidia_driver_present", lambda: True)
    hardware.gpu.cache_clear()
    try:
        assert hardware.gpu() is None  # a driver, but CUDA sees no device: nothing to offer
    finally:
        hardware.gpu.cache_clear()
