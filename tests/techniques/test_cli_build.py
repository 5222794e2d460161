"""`slimformer build` and benchmarking a built variant on another runtime, through the real CLI."""

import json

from test_cli import assert_one_line_error, run


def test_build_then_bench_on_openvino(tiny_distilbert, keyword_csv, tmp_path):
    out = tmp_path / "int8"
    proc = run("build", "--model", str(tiny_distilbert), "--recipe", "onnx,int8-static:method=minmax",
               "--calib-data", str(keyword_csv), "--out", str(out), "--calibration-size", "40")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["technique"] for s in manifest["steps"]] == ["onnx", "int8-static"]
    assert manifest["steps"][1]["stats"]["calibration_texts"] == 40 and manifest["format"] == "onnx"
    proc = run("bench", "--variant", str(out), "--data", str(keyword_csv), "--runtime", "openvino",
               "--option", "precision=f32", "--latency-samples", "5", "--warmup", "1", "--batch-sizes", "1,4",
               "--throughput-seconds", "0.05", "--throughput-texts", "8", "--cold-start-runs", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    variant = json.loads(proc.stdout)["variants"][0]
    assert variant["runtime"] == "openvino" and variant["predictor"]["precision"] == "f32"
    assert variant["size_mb"] > 0 and variant["cold_start"]["median_s"] > 0
    assert_one_line_error(run("build", "--model", str(tiny_distilbert), "--recipe", "onnx", "--calib-data",
                              str(keyword_csv), "--out", str(out)), "exists already")
    assert_one_line_error(run("bench", "--variant", str(out), "--data", str(keyword_csv), "--runtime", "torch"),
                          "torch runtime runs hf or torch-int8 models")


def test_build_mistakes(tiny_bert, sentiment_model, keyword_csv, tmp_path):
    assert_one_line_error(run("build", "--model", str(tiny_bert), "--recipe", "onnx,int3", "--calib-data",
                              str(keyword_csv), "--out", str(tmp_path / "x")), "unknown technique 'int3'")
    assert_one_line_error(run("build", "--model", str(sentiment_model), "--recipe", "onnx", "--calib-data",
                              str(keyword_csv), "--out", str(tmp_path / "y")), "does not know")
    assert_one_line_error(run("bench", "--variant", str(tiny_bert), "--data", str(keyword_csv), "--option", "x"),
                          "--option takes KEY=VALUE")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
