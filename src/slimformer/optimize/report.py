"""report.md and a self-contained report.html (inline SVG charts, inline CSS: opens offline, no CDN)."""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np

from ..cache import write_text
from .select import miss_text


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG is inlined in HTML


def _plt():
    from ..plotting import pyplot

    plt = pyplot()
    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    return plt


def bubble_chart(rows: list[dict], selection: dict) -> str:
    """Accuracy vs end-to-end p50 latency; bubble area = size on disk; baseline marked; Pareto front drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sizes = np.array([r["size_mb"] or 1.0 for r in rows])
    scale = 1500 / max(sizes.max(), 1e-9)
    threads = sorted({r["threads"] for r in rows})
    for t, color in zip(threads, ["C0", "C1", "C2", "C4"], strict=False):
        group = [r for r in rows if r["threads"] == t]
        ax.scatter([r["latency_ms"] for r in group], [100 * r["accuracy"] for r in group],
                   s=[(r["size_mb"] or 1.0) * scale for r in group], alpha=0.45, color=color,
                   edgecolors="k", linewidths=0.5, label=f"{t} thread{'s' if t > 1 else ''}")
    front, best = [], -1.0  # the accuracy-latency front: each point more accurate than every faster one
    for r in sorted(rows, key=lambda r: (r["latency_ms"], -r["accuracy"])):
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    ax.step([r["latency_ms"] for r in front], [100 * r["accuracy"] for r in front], "k--", lw=1, where="post",
            label="Pareto front (accuracy, latency)")
    for r in rows:
        baseline, chosen = r["name"] == r["baseline"], r["name"] == selection["recommended"]
        if baseline or chosen or r in front:
            ax.annotate(r["name"] + (" (baseline)" if baseline else " (recommended)" if chosen else ""),
                        (r["latency_ms"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points", weight="bold" if chosen else "normal")
        if baseline:
            ax.scatter([r["latency_ms"]], [100 * r["accuracy"]], marker="*", s=160, color="k", zorder=3)
        if chosen:
            ax.scatter([r["latency_ms"]], [100 * r["accuracy"]], marker="o", s=90, facecolors="none",
                       edgecolors="red", linewidths=2, zorder=3)
    ax.set_xscale("log")
    ax.set(xlabel="end-to-end latency p50 at batch 1 (ms, log scale)", ylabel="accuracy (%)",
           title="Accuracy vs latency (bubble area = size on disk; * = baseline; o = recommended)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right", markerscale=0.4)
    return _svg(fig)


def latency_chart(results: dict, out: Path) -> str:
    """Distribution of end-to-end batch-1 latency per variant (box: p25-p75, whiskers: p5-p95)."""
    plt = _plt()
    data, names = [], []
    for v in results["variants"]:
        path = out / "logits" / f"{v['name']}.latency_ms.npy"
        if path.is_file():
            data.append(np.load(path))
            names.append(v["name"])
    order = np.argsort([np.median(d) for d in data])
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(names) + 1.2))
    ax.boxplot([data[i] for i in order], vert=False, whis=(5, 95), showfliers=False)
    ax.set_yticks(range(1, len(names) + 1), [names[i] for i in order], fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="end-to-end latency at batch 1 (ms, log scale)", title="Latency distributions (real test texts)")
    ax.grid(alpha=0.3, axis="x", which="both")
    return _svg(fig)


def throughput_chart(results: dict) -> str:
    """Texts per second against batch size, one panel per thread count."""
    plt = _plt()
    threads = sorted({v["threads"] for v in results["variants"]})
    fig, axes = plt.subplots(1, len(threads), figsize=(4.8 * len(threads), 4), squeeze=False)
    for ax, t in zip(axes[0], threads, strict=True):
        for v in (v for v in results["variants"] if v["threads"] == t):
            points = v["throughput"]
            ax.plot([p["batch_size"] for p in points], [p["texts_per_s"] for p in points], marker="o", lw=1,
                    label=v["name"].removesuffix(f"-t{t}"))
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size", ylabel="texts / s", title=f"Throughput, {t} thread{'s' if t > 1 else ''}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    return _svg(fig)


COLUMNS = ["variant", "runtime", "threads", "accuracy %", "Δ points", "macro-F1", "p50 ms", "p90 ms", "p99 ms",
           "mean ± std ms", "speed-up", "texts/s (batch 1/8/32)", "size MB", "peak RSS MB", "cold start s",
           "budget", "Pareto"]


def table_rows(results: dict) -> list[list[str]]:
    sel = results["selection"]
    by_name = {r["name"]: r for r in sel["rows"]}
    out = []
    for v in sorted(results["variants"], key=lambda v: by_name[v["name"]]["latency_ms"]):
        r, e2e = by_name[v["name"]], v["latency_ms"]["end_to_end"]
        tput = "/".join(f"{p['texts_per_s']:.0f}" for p in v["throughput"])
        opts = "".join(f" {k}={x}" for k, x in v["options"].items())
        out.append([v["name"], v["runtime"] + opts, str(v["threads"]), f"{100 * v['accuracy']:.2f}",
                    f"{-r['drop_points']:+.2f}", f"{v['macro_f1']:.4f}", f"{e2e['p50']:.3f}", f"{e2e['p90']:.3f}",
                    f"{e2e['p99']:.3f}", f"{e2e['mean']:.3f} ± {e2e['std']:.3f}", f"{r['speedup']:.2f}x", tput,
                    f"{v['size_mb']:.1f}" if v.get("size_mb") else "-", f"{v['memory']['peak_rss_mb']:.0f}",
                    f"{v['cold_start']['median_s']:.2f}" if v.get("cold_start") else "-",
                    "within" if r["within"] else "misses " + ", ".join(m["what"] for m in r["misses"]),
                    "yes" if r["name"] in sel["pareto"] else ""])
    return out


def recommendation(results: dict, run: Path) -> tuple[str, list[str]]:
    """The decision in plain words, and the exact commands to deploy it."""
    sel = results["selection"]
    by_name = {r["name"]: r for r in sel["rows"]}
    if sel["recommended"]:
        r = by_name[sel["recommended"]]
        text = (f"Recommended: {r['name']} — end-to-end p50 {r['latency_ms']:.3f} ms at batch 1, "
                f"{r['speedup']:.2f}x faster than {r['baseline']} ({by_name[r['baseline']]['latency_ms']:.3f} ms), "
                f"accuracy {100 * r['accuracy']:.2f}% ({-r['drop_points']:+.2f} points), "
                f"{r['size_mb']:.1f} MB on disk. It is the fastest of the {sum(x['within'] for x in sel['rows'])} "
                f"variants inside the budget ({sel['budget_text']}).")
        name = r["name"]
    else:
        c = sel["closest"]
        text = (f"No variant meets the budget ({sel['budget_text']}). Closest: {c['name']}, which misses it: "
                f"{miss_text(c['misses'])}. Loosen the budget, or deploy the closest with care.")
        name = c["name"]
    bundle = run / "bundle"
    commands = [f"slimformer export {run} --variant {name} --out {bundle}",
                f"slimformer predict {bundle} --input texts.txt --out predictions.jsonl",
                f"python -c \"from slimformer import load_predictor; print(load_predictor('{bundle}')"
                f".predict(['How far is the moon?']))\""]
    return text, commands


def _fallback_lines(sel: dict) -> list[str]:
    lines = []
    for f in sel["fallbacks"]:
        tried = ", ".join(f"{t['kept_in_float']} in float: {t['drop_points']:+.2f}" for t in f["tried"])
        lines.append(f"{f['from']} lost {f['test_drop_points']:.2f} points: of {f['nodes']} quantizable nodes, "
                     f"kept {len(f['excluded'])} in float ({', '.join(f['excluded'][:6])}"
                     f"{'…' if len(f['excluded']) > 6 else ''}); validation drop by nodes kept in float: {tried}; "
                     f"{'within' if f['within'] else 'still outside'} the budget. Its measured cost is the "
                     f"{f['from']}-mixed rows of the table.")
    return lines


def _machine_line(results: dict) -> str:
    m = results["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    return (f"{m['cpu']['model']} ({m['cpu']['arch']}, {m['cpu']['cores']} cores; ISA: {' '.join(m['cpu']['isa'])}); "
            f"GPU: {m['gpu'] or 'none'}; {m['os']}; {libs}")


def write_report(results: dict, out: Path) -> None:
    sel = results["selection"]
    charts = {"accuracy_latency": bubble_chart(sel["rows"], sel), "latency": latency_chart(results, out),
              "throughput": throughput_chart(results)}
    for name, svg in charts.items():
        write_text(out / "charts" / f"{name}.svg", svg)
    text, commands = recommendation(results, out)
    ds = results["dataset"]
    notes = _fallback_lines(sel) + [f"build failed: {f['name']} ({f['recipe']}): {f['error']}" for f in sel["failed"]]
    notes += [f"benchmark failed: {f['name']}: {f['error']}" for f in results.get("failed", [])]
    settings = results["settings"]
    method = (f"Each variant ran in its own process with its threads fixed; batch-1 latency over "
              f"{settings['latency_samples'] or 'all'} real {ds['split']} texts after {settings['warmup']} warm-up "
              f"calls; accuracy on all {ds['n']} {ds['split']} texts of {ds['name']} (fingerprint "
              f"{ds['fingerprint']}); speed-up against PyTorch FP32 of the same model at the same thread count.")
    rows = table_rows(results)

    md = [f"# slimformer optimize — {ds['name']}", "", f"**{text}**", "", "Deploy it:", "", "```sh", *commands, "```",
          "", f"Budget: {sel['budget_text']}.", "", method, "",
          "![accuracy vs latency](charts/accuracy_latency.svg)", "", "## All variants", "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
          *("| " + " | ".join(r) + " |" for r in rows), "",
          "![latency distributions](charts/latency.svg)", "", "![throughput](charts/throughput.svg)", ""]
    if notes:
        md += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    md += ["## Machine", "", _machine_line(results), ""]
    write_text(out / "report.md", "\n".join(md))

    e = html.escape
    table = ("<table id='metrics'><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>"
             + "".join("<tr" + (" class='chosen'" if r[0] == sel["recommended"] else "") + ">"
                       + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</tbody></table>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slimformer optimize — {e(ds['name'])}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}}
.decision{{background:#eef6ee;border-left:4px solid #2a7;padding:.8em 1em;font-size:1.05em}}
pre{{background:#f4f4f4;padding:.8em;overflow-x:auto}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} td:first-child,th:first-child{{text-align:left}}
tr.chosen{{background:#e4f4e4;font-weight:bold}} .chart svg{{max-width:100%;height:auto}} .muted{{color:#666}}
</style></head><body>
<h1>slimformer optimize — {e(ds['name'])}</h1>
<p class="decision" id="recommendation">{e(text)}</p>
<p>Deploy it:</p><pre>{e(chr(10).join(commands))}</pre>
<p>Budget: {e(sel['budget_text'])}. <span class="muted">{e(method)}</span></p>
<h2>Accuracy vs latency</h2><div class="chart" id="chart-accuracy-latency">{charts['accuracy_latency']}</div>
<h2>All variants</h2>{table}
<h2>Latency distributions</h2><div class="chart" id="chart-latency">{charts['latency']}</div>
<h2>Throughput vs batch size</h2><div class="chart" id="chart-throughput">{charts['throughput']}</div>
{"<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>" if notes else ""}
<h2>Machine</h2><p id="machine">{e(_machine_line(results))}</p>
<p class="muted">{e(results['tool'])}, {e(results['created'])}</p>
</body></html>
"""
    write_text(out / "report.html", page)
