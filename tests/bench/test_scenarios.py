from conftest import keyword_rows

from slimformer.bench import scenarios
from slimformer.bench.energy import EnergyMeter
from slimformer.runtimes import load_predictor


def counting(model):
    """A real predictor whose forward passes record their batch sizes."""
    predictor = load_predictor(model, "torch")
    sizes, forward = [], predictor.forward
    predictor.forward = lambda encoded: sizes.append(len(encoded["input_ids"])) or forward(encoded)
    return predictor, sizes


def test_throughput_runs_each_batch_as_one_pass_and_measures_its_energy(tiny_bert, tmp_path):
    """A batch of 64 is one forward pass of 64 texts (a GPU is measured at batch 256, not 8 passes of 32)."""
    predictor, sizes = counting(tiny_bert)
    texts = [r["text"] for r in keyword_rows(100)]
    result = scenarios.throughput(predictor, texts, 64, min_seconds=0.01, min_texts=1, repeats=2,
                                  meter=EnergyMeter(tmp_path / "no-powercap"))
    assert sizes == [64, 64, 36] and result["batch_size"] == 64 and len(result["runs"]) == 2
    assert result["energy"]["texts"] == 100 and result["energy"]["joules_per_1k_texts"] is None


def test_throughput_on_a_gpu_discards_a_whole_warm_run_before_timing(tiny_bert, tmp_path):
    """warm_runs untimed repeats (what a GPU predictor gets): their texts are neither timed nor metered."""
    predictor, sizes = counting(tiny_bert)
    texts = [r["text"] for r in keyword_rows(100)]
    result = scenarios.throughput(predictor, texts, 64, min_seconds=10, min_texts=100, repeats=2,
                                  meter=EnergyMeter(tmp_path / "no-powercap"), warm_runs=1)
    assert sizes == [64] + [64, 36] * 3 and len(result["runs"]) == 2 and result["energy"]["texts"] == 200
