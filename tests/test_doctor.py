import json

from test_cli import run

from slimformer.recipes import advice, candidates

OLD_CPU = {"model": "old", "arch": "x86_64", "isa": ["AVX2", "FMA"], "cores": 4}
NEW_CPU = {"model": "new", "arch": "x86_64", "isa": ["AVX2", "AVX-512", "AVX512-VNNI", "AVX512-BF16"], "cores": 2}


def test_advice_follows_the_instruction_set():
    old = " ".join(advice(OLD_CPU))
    assert "no VNNI" in old and "may not pay" in old and "bf16 variants skipped" in old
    new = " ".join(advice(NEW_CPU, gpu="NVIDIA H100"))
    assert "VNNI present" in new and "BF16 present" in new and "fp16" in new


def test_candidates_follow_the_hardware():
    old = {c.name: c for c in candidates(OLD_CPU)}
    assert "uint8" in old["ort-int8-dynamic"].recipe and "torch-bf16" not in old and "torch-nf4" not in old
    assert "ov-int8-bf16" not in old and old["ov-int8"].options == {"precision": "f32"}
    new = {c.name: c for c in candidates(NEW_CPU)}
    assert "weight_type=int8" in new["ort-int8-dynamic"].recipe and "torch-bf16" in new and "ov-bf16" in new
    assert new["ov-int8-bf16"].recipe == new["ov-int8"].recipe and new["ov-int8-bf16"].options == {"precision": "bf16"}
    gpu = {c.name for c in candidates(NEW_CPU, gpu="NVIDIA H100")}
    assert {"torch-fp16-cuda", "ort-fp16-cuda", "torch-nf4"} <= gpu
    assert list(old)[0] == "torch-fp32"  # the baseline comes first


def test_doctor_prints_fingerprint_and_candidates():
    proc = run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["machine"]["cpu"]["cores"] >= 1 and info["advice"] and info["candidates"][0]["name"] == "torch-fp32"
