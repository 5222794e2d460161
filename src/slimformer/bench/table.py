"""One table of benchmark results, rendered for the terminal (rich) and for markdown."""

from __future__ import annotations

from .stats import LatencyStats

HEADERS = ["variant", "threads", "acc %", "macro-F1", "e2e p50 (p90/p99) ms", "e2e mean±std ms", "model p50 ms",
           "texts/s @1/8/32", "size MB", "peak RSS MB", "cold start s"]


def rows(results: dict) -> list[list[str]]:
    out = []
    for v in results["variants"]:
        e2e = LatencyStats.from_dict(v["latency_ms"]["end_to_end"])
        model = LatencyStats.from_dict(v["latency_ms"]["model"])
        tput = "/".join(f"{t['texts_per_s']:.0f}" for t in v["throughput"])
        out.append([
            v["name"], str(v["threads"]), f"{100 * v['accuracy']:.2f}", f"{v['macro_f1']:.4f}", e2e.cell(),
            f"{e2e.mean:.2f}±{e2e.std:.2f}", f"{model.p50:.2f}", tput,
            f"{v['size_mb']:.1f}" if v.get("size_mb") is not None else "-",
            f"{v['memory']['peak_rss_mb']:.0f}",
            f"{v['cold_start']['median_s']:.2f}" if v.get("cold_start") else "-",
        ])
    return out


def machine_line(results: dict) -> str:
    m = results["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if k in ("torch", "transformers", "onnxruntime",
                                                                              "openvino"))
    return (f"{m['cpu']['model']} · {m['cpu']['cores']} cores · ISA {' '.join(m['cpu']['isa'])} · "
            f"{m['gpu'] or 'no GPU'} · {libs}")


def data_line(results: dict) -> str:
    d, s = results["dataset"], results["settings"]
    return (f"{d['name']} {d['split']} split, {d['n']} texts (fingerprint {d['fingerprint']}); latency over "
            f"{s['latency_samples'] or 'all'} texts in a fixed shuffled order after {s['warmup']} warm-up calls, "
            f"batch 1; throughput over {s['throughput_samples']} texts")


def to_markdown(results: dict) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join([*lines, "", f"Machine: {machine_line(results)}", "", f"Data: {data_line(results)}", ""])


def to_rich(results: dict):
    from rich.table import Table

    table = Table(title="slimformer benchmark", caption=f"{machine_line(results)}\n{data_line(results)}")
    for h in HEADERS:
        table.add_column(h, justify="left" if h == "variant" else "right")
    for r in rows(results):
        table.add_row(*r)
    return table
