"""One table of benchmark results, rendered for the terminal (rich) and for markdown."""

from __future__ import annotations

from ..hardware import gpu_text
from ..metrics import invariance_text, merged_invariance
from ..tasks.scoring import scoring_for
from .energy import energy_text
from .stats import LatencyStats

HEADERS = ["variant", "threads", "e2e p50 (p90/p99) ms", "e2e mean±std ms", "model p50 ms", "texts/s @{batches}",
           "energy / 1k texts", "size MB", "peak RSS MB", "cold start s", "batch-invariant"]


def _quality_columns(results: dict) -> list[tuple[str, str, float]]:
    """(key, header, scale) of the task's figures per split: its metrics, then its agreement with the reference
    (embeddings: mean cosine and recall@10 of the reference's nearest neighbours)."""
    scoring = scoring_for(results.get("task", "classification"))
    agreement = [("agreement.mean_cosine", "cosine", 1.0), ("agreement.recall_at_10", "recall@10 %", 100.0)] \
        if scoring.task == "embedding" else []
    return [*scoring.columns, *agreement]


def headers(results: dict) -> list[str]:
    """The variant and threads, each split's quality figures (decision split first), then the rest."""
    splits = list(results["dataset"]["n"])
    batches = "/".join(map(str, results["settings"]["batch_sizes"]))
    return HEADERS[:2] + [f"{s} {h}" for s in splits for _, h, _ in _quality_columns(results)] + \
        [h.format(batches=batches) for h in HEADERS[2:]]


def _cell(q: dict, key: str, scale: float) -> str:
    outer, _, inner = key.partition(".")
    value = q.get(outer) if not inner else (q.get(outer) or {}).get(inner)
    return "ref" if value is None and inner else "-" if value is None else \
        f"{scale * value:.2f}" if scale != 1.0 else f"{value:.4f}"


def rows(results: dict) -> list[list[str]]:
    out = []
    columns = _quality_columns(results)
    for v in results["variants"]:
        e2e = LatencyStats.from_dict(v["latency_ms"]["end_to_end"])
        model = LatencyStats.from_dict(v["latency_ms"]["model"])
        tput = "/".join(f"{t['texts_per_s']:.0f}" for t in v["throughput"])
        quality = [_cell(q, key, scale) for q in v["quality"].values() for key, _, scale in columns]
        invariance = merged_invariance([q["batch_invariance"] for q in v["quality"].values()])
        out.append([
            v["name"], str(v["threads"]), *quality, e2e.cell(), f"{e2e.mean:.2f}±{e2e.std:.2f}", f"{model.p50:.2f}",
            tput, energy_text(v.get("energy")), f"{v['size_mb']:.1f}" if v.get("size_mb") is not None else "-",
            f"{v['memory']['peak_rss_mb']:.0f}",
            f"{v['cold_start']['median_s']:.2f}" if v.get("cold_start") else "-",
            "no: " + invariance_text(invariance) if invariance["flagged"] else "yes",
        ])
    return out


def machine_line(results: dict) -> str:
    m = results["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if k in ("torch", "transformers", "onnxruntime",
                                                                              "openvino"))
    return (f"{m['cpu']['model']} · {m['cpu']['cores']} cores · ISA {' '.join(m['cpu']['isa'])} · "
            f"GPU: {gpu_text(m['gpu'])} · {libs}")


def data_line(results: dict) -> str:
    d, s = results["dataset"], results["settings"]
    sizes = ", ".join(f"{split} {n}" for split, n in d["n"].items())
    what = scoring_for(results.get("task", "classification")).metric_label
    return (f"{d['name']} ({sizes} texts; fingerprint {d['fingerprint']}); {what} = the worse of batch 1 and "
            f"padded batches of {s['accuracy_batch_size']}; latency over {s['latency_samples'] or 'all'} "
            f"{d['decision_split']} texts in a fixed shuffled order after {s['warmup']} warm-up calls, batch 1; "
            f"throughput: median of {s['throughput_repeats']} runs per batch size, each until "
            f"{s['throughput_min_s']:g} s or {s['throughput_min_texts']} texts")


def to_markdown(results: dict) -> str:
    lines = ["| " + " | ".join(headers(results)) + " |", "|" + "---|" * len(headers(results))]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join([*lines, "", f"Machine: {machine_line(results)}", "", f"Data: {data_line(results)}", ""])


def to_rich(results: dict):
    from rich.table import Table

    table = Table(title="slimformer benchmark", caption=f"{machine_line(results)}\n{data_line(results)}")
    for h in headers(results):
        table.add_column(h, justify="left" if h == "variant" else "right")
    for r in rows(results):
        table.add_row(*r)
    return table
