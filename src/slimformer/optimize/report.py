"""report.md and a self-contained report.html (inline SVG charts, inline CSS: opens offline, no CDN)."""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np

from ..bench.energy import energy_text
from ..bench.runner import ANSWERS_DIR
from ..cache import write_text
from ..hardware import gpu_text
from ..metrics import merged_invariance
from ..tasks.scoring import Scoring, scoring_for
from .select import drop_text, miss_text


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


def scoring_of(results: dict) -> Scoring:
    """The scoring of a run's task (runs before schema 3 were classification)."""
    return scoring_for(results.get("task", "classification"))


def bubble_chart(rows: list[dict], selection: dict, what: str = "accuracy") -> str:
    """The budget metric (`what`) vs end-to-end p50 latency; bubble area = size on disk; baseline marked; Pareto
    front drawn."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    sizes = np.array([r["size_mb"] or 1.0 for r in rows])
    scale = 1500 / max(sizes.max(), 1e-9)
    threads = sorted({r["threads"] for r in rows})
    for t, color in zip(threads, ["C0", "C1", "C2", "C4"], strict=False):
        group = [r for r in rows if r["threads"] == t]
        ax.scatter([r["latency_ms"] for r in group], [100 * r["quality"] for r in group],
                   s=[(r["size_mb"] or 1.0) * scale for r in group], alpha=0.45, color=color,
                   edgecolors="k", linewidths=0.5, label=f"{t} thread{'s' if t > 1 else ''}")
    front, best = [], float("inf")  # the quality-latency front: each point better than every faster one
    for r in sorted(rows, key=lambda r: (r["latency_ms"], r["drop_points"])):
        if r["drop_points"] < best:
            front.append(r)
            best = r["drop_points"]
    ax.step([r["latency_ms"] for r in front], [100 * r["quality"] for r in front], "k--", lw=1, where="post",
            label=f"Pareto front ({what}, latency)")
    for r in rows:
        baseline, chosen = r["name"] == r["baseline"], r["name"] == selection["recommended"]
        if baseline or chosen or r in front:
            ax.annotate(r["name"] + (" (baseline)" if baseline else " (recommended)" if chosen else ""),
                        (r["latency_ms"], 100 * r["quality"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points", weight="bold" if chosen else "normal")
        if baseline:
            ax.scatter([r["latency_ms"]], [100 * r["quality"]], marker="*", s=160, color="k", zorder=3)
        if chosen:
            ax.scatter([r["latency_ms"]], [100 * r["quality"]], marker="o", s=90, facecolors="none",
                       edgecolors="red", linewidths=2, zorder=3)
    ax.set_xscale("log")
    ax.set(xlabel="end-to-end latency p50 at batch 1 (ms, log scale)", ylabel=f"validation {what} (%)",
           title=f"{what.capitalize()} vs latency (bubble area = size on disk; * = baseline; o = recommended)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right", markerscale=0.4)
    return _svg(fig)


def latency_chart(results: dict, out: Path) -> str:
    """Distribution of end-to-end batch-1 latency per variant (box: p25-p75, whiskers: p5-p95)."""
    plt = _plt()
    data, names = [], []
    for v in results["variants"]:
        path = out / ANSWERS_DIR / f"{v['name']}.latency_ms.npy"
        if path.is_file():
            data.append(np.load(path))
            names.append(v["name"])
    order = np.argsort([np.median(d) for d in data])
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(names) + 1.2))
    ax.boxplot([data[i] for i in order], vert=False, whis=(5, 95), showfliers=False)
    ax.set_yticks(range(1, len(names) + 1), [names[i] for i in order], fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="end-to-end latency at batch 1 (ms, log scale)",
           title="Latency distributions (real validation texts)")
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
            median = np.array([p["texts_per_s"] for p in points])
            spread = np.array([[median[i] - min(p["runs"]), max(p["runs"]) - median[i]] for i, p in enumerate(points)])
            ax.errorbar([p["batch_size"] for p in points], median, yerr=spread.T, marker="o", lw=1, capsize=2,
                        label=v["name"].removesuffix(f"-t{t}"))
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size", ylabel="texts / s", title=f"Throughput, {t} thread{'s' if t > 1 else ''}")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    return _svg(fig)


COLUMNS = ["variant", "runtime", "threads", "val {metric}", "val Δ pts (95% CI)", "p", "{task}",
           "test {metric} (held out)", "test Δ pts (95% CI)", "p50 ms", "p90 ms", "p99 ms", "speed-up",
           "texts/s (batch {batches})", "energy / 1k texts (batch)", "size MB", "peak RSS MB", "peak VRAM MB",
           "cold start s", "batch-invariant", "budget", "Pareto"]
TASK_COLUMN = {"classification": "worst label Δ", "embedding": "val / test cosine, recall@10",
               "ner": "val / test word tags agreeing, entity F1 vs baseline"}
P_COLUMN = {"classification": "McNemar p"}


def columns(results: dict) -> list[str]:
    scoring = scoring_of(results)
    batches = "/".join(map(str, results["settings"]["batch_sizes"]))
    metric = f"{scoring.metric_label} %" if scoring.metric_label != "accuracy" else "acc %"
    return [c.format(batches=batches, metric=metric, task=TASK_COLUMN.get(scoring.task, "agreement"))
            if c != "p" else P_COLUMN.get(scoring.task, "sign test p") for c in COLUMNS]


def _task_cell(scoring: Scoring, row: dict, decision: str, held: list[str]) -> str:
    """The task's own figure of a row: the worst label's recall change (classification); agreement with the
    baseline's vectors on each split (embeddings: mean cosine, recall@10 of its nearest neighbours)."""
    if scoring.task == "classification":
        worst = row["splits"][decision]["worst_class"]
        return f"{-worst['drop_points']:+.1f} {worst['label']}" if worst else "-"
    cells = []
    for split in (decision, *held[:1]):
        a = row["splits"][split]["agreement"]
        if "word_agreement" in a:  # ner: word tags, and entities scored against the baseline's
            cells.append(f"{100 * a['word_agreement']:.2f}%, {100 * a['entity_f1_vs_reference']:.2f}")
            continue
        cells.append(f"{a['mean_cosine']:.4f}, {100 * a['recall_at_10']:.1f}%" if "mean_cosine" in a else "-")
    return " / ".join(cells)


def _vram_text(memory: dict) -> str:
    """torch's allocator peak and NVML's device-wide peak where measured (a CPU variant has neither)."""
    figures = [f"{memory[k]:.0f}" for k in ("peak_vram_mb", "peak_vram_nvml_mb") if memory.get(k) is not None]
    return " / ".join(figures) or "-"


def table_rows(results: dict) -> list[list[str]]:
    sel, scoring = results["selection"], scoring_of(results)
    by_name = {r["name"]: r for r in sel["rows"]}
    decision = sel["decision_split"]
    held = results["dataset"]["held_out"][:1]
    out = []
    for v in sorted(results["variants"], key=lambda v: by_name[v["name"]]["latency_ms"]):
        r, e2e = by_name[v["name"]], v["latency_ms"]["end_to_end"]
        d = r["splits"][decision]
        t = r["splits"][held[0]] if held else None
        tput = "/".join(f"{p['texts_per_s']:.0f}" for p in v["throughput"])
        opts = "".join(f" {k}={x}" for k, x in v["options"].items())
        inv = merged_invariance([s["batch_invariance"] for s in r["splits"].values()])
        metric = scoring.metric
        out.append([v["name"], v["runtime"] + opts, str(v["threads"]), f"{100 * d[metric]:.2f}",
                    drop_text(d, short=True), f"{d['mcnemar_p']:.3g}", _task_cell(scoring, r, decision, held),
                    f"{100 * t[metric]:.2f}" if t else "-", drop_text(t, short=True) if t else "-",
                    f"{e2e['p50']:.3f}", f"{e2e['p90']:.3f}", f"{e2e['p99']:.3f}", f"{r['speedup']:.2f}x", tput,
                    energy_text(v.get("energy")) + (f" ({v['energy']['batch_size']})" if v.get("energy") else ""),
                    f"{v['size_mb']:.1f}" if v.get("size_mb") else "-", f"{v['memory']['peak_rss_mb']:.0f}",
                    _vram_text(v["memory"]),
                    f"{v['cold_start']['median_s']:.2f}" if v.get("cold_start") else "-",
                    "no: " + scoring.invariance_text(inv) if r["batch_dependent"] else "yes",
                    "within" if r["within"] else "misses " + ", ".join(m["what"] for m in r["misses"]),
                    "yes" if r["name"] in sel["pareto"] else ""])
    return out


def quality_text(row: dict, decision: str, held_out: list[str], scoring: Scoring) -> str:
    """The budget metric on the decision split (with interval and test) and on each held-out split, labelled."""
    test = "McNemar" if scoring.class_guard else "sign test"

    def one(split: dict) -> str:
        agreement = split.get("agreement") or {}
        extra = (f"; mean cosine {agreement['mean_cosine']:.4f}, recall@10 {100 * agreement['recall_at_10']:.1f}% "
                 "vs the baseline's vectors") if "mean_cosine" in agreement else ""
        return f"{100 * split[scoring.metric]:.2f}% ({drop_text(split)}; {test} p={split['mcnemar_p']:.2g}{extra}"

    parts = [f"{decision} {scoring.metric_label} {one(row['splits'][decision])}; decided on)"]
    for split in held_out:
        t = row["splits"].get(split)
        if t:
            parts.append(f"held-out {split} {scoring.metric_label} {one(t)}; n={t['n']})")
    return "; ".join(parts)


def recommendation(results: dict, run: Path) -> tuple[str, list[str]]:
    """The decision in plain words, and the exact commands to deploy it."""
    sel, scoring = results["selection"], scoring_of(results)
    by_name = {r["name"]: r for r in sel["rows"]}
    decision, held = sel["decision_split"], results["dataset"]["held_out"]
    if sel["recommended"]:
        r = by_name[sel["recommended"]]
        text = (f"Recommended: {r['name']} — end-to-end p50 {r['latency_ms']:.3f} ms at batch 1, "
                f"{r['speedup']:.2f}x faster than {r['baseline']} ({by_name[r['baseline']]['latency_ms']:.3f} ms); "
                f"{quality_text(r, decision, held, scoring)}; {r['size_mb']:.1f} MB on disk. It is the fastest of the "
                f"{sum(x['within'] for x in sel['rows'])} variants inside the budget ({sel['budget_text']}, checked "
                f"on {decision}).")
        if r["batch_dependent"]:
            text += (" Its answers depend on their batch-mates (" + scoring.invariance_text(merged_invariance(
                [s["batch_invariance"] for s in r["splits"].values()])) + "); the budget used its worse mode.")
        name = r["name"]
    else:
        c = sel["closest"]
        text = (f"No variant meets the budget ({sel['budget_text']}, checked on {decision}). Closest: {c['name']}, "
                f"which misses it: {miss_text(c['misses'])}; "
                f"{quality_text(by_name[c['name']], decision, held, scoring)}. "
                "Loosen the budget, or deploy the closest with care.")
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
        lines.append(f"{f['from']} lost {f['decision_drop_points']:.2f} points on {sel['decision_split']}: of "
                     f"{f['nodes']} quantizable nodes, kept {len(f['excluded'])} in float "
                     f"({', '.join(f['excluded'][:6])}{'…' if len(f['excluded']) > 6 else ''}); validation drop by "
                     f"nodes kept in float: {tried}; {'within' if f['within'] else 'still outside'} the budget. Its "
                     f"measured cost is the {f['from']}-mixed rows of the table.")
    return lines


def _distill_lines(results: dict) -> list[str]:
    d = results.get("distill")
    if not d:
        return []
    t = d["seeds"][0]
    sliced = t.get("chosen_on") == "selection"  # runs made before the selection slice have no chosen_on
    seeds = "; ".join(f"seed {s['seed']}: " + (f"selection slice {100 * s['choosing_accuracy']:.2f}%, " if sliced
                                               else "") +
                      f"validation {100 * s['validation_accuracy']:.2f}%, held-out test {100 * s['test_accuracy']:.2f}%"
                      for s in d["seeds"])
    chosen = ("the best on a selection slice of the training texts (held out of training; validation was not looked "
              "at until the budget check)") if sliced else "the best on validation"
    return [f"Students distilled (FP32, PyTorch): {seeds}; teacher validation "
            f"{100 * t['teacher_validation_accuracy']:.2f}%, test {100 * t['teacher_test_accuracy']:.2f}%. Kept seed "
            f"{d['chosen_seed']}, {chosen}."]


def _machine_line(results: dict) -> str:
    m = results["machine"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    return (f"{m['cpu']['model']} ({m['cpu']['arch']}, {m['cpu']['cores']} cores; ISA: {' '.join(m['cpu']['isa'])}); "
            f"GPU: {gpu_text(m['gpu'])}; {m['os']}; {libs}")


def _task_method(scoring: Scoring) -> str:
    if scoring.task != "embedding":
        return ""
    return ("precision@10: each text of a split queries the split's other texts by cosine; the share of its 10 "
            "nearest that carry its label (labels used only as relevance). Agreement with the baseline's (PyTorch "
            "FP32) vectors on the same texts: mean cosine of each text's two vectors, and recall@10 of the "
            "baseline's nearest neighbours. ")


def write_report(results: dict, out: Path) -> None:
    sel, scoring = results["selection"], scoring_of(results)
    what = scoring.metric_label
    charts = {"quality_latency": bubble_chart(sel["rows"], sel, what), "latency": latency_chart(results, out),
              "throughput": throughput_chart(results)}
    for name, svg in charts.items():
        write_text(out / "charts" / f"{name}.svg", svg)
    text, commands = recommendation(results, out)
    ds = results["dataset"]
    notes = _distill_lines(results) + _fallback_lines(sel)
    source = ds.get("source", {})
    notes += [f"validation split: {source['validation']}"] if "validation" in source else []
    notes += [f"build failed: {f['name']} ({f['recipe']}): {f['error']}" for f in sel["failed"]]
    notes += [f"benchmark failed: {f['name']}: {f['error']}" for f in results.get("failed", [])]
    settings = results["settings"]
    decision, held = sel["decision_split"], ds["held_out"]
    method = (f"Decided on {decision}, reported on {', '.join(held) or 'nothing else'}: the budget, the recommendation "
              f"and the Pareto front use the {decision} split ({ds['n'][decision]} texts); "
              + "".join(f"the {s} split ({ds['n'][s]} texts) is held out and only reported; " for s in held)
              + f"Δ is the {what} change against PyTorch FP32 of the same model at the same thread count, with a "
              f"paired bootstrap 95% interval and an exact sign test on the texts that differ (McNemar's test for a "
              f"classifier). {_task_method(scoring)}Each variant's {what} is the worse of batch 1 and padded "
              f"batches of {settings['accuracy_batch_size']}; a variant whose "
              f"answers move between the two is marked not batch-invariant. Each variant ran in its own process with "
              f"its threads fixed; batch-1 latency over {settings['latency_samples'] or 'all'} real {decision} texts "
              f"after {settings['warmup']} warm-up calls; throughput per batch size {settings['throughput_repeats']} "
              f"times, each until {settings['throughput_min_s']:g} s or {settings['throughput_min_texts']} texts, "
              f"median shown; energy per 1,000 texts over those runs at the fastest batch size, from the CPU "
              f"package (RAPL) and GPU (NVML) counters where this machine lets them be read (whole package and GPU, "
              f"idle draw included; 'not readable here' otherwise, never 0). Data: {ds['name']} "
              f"(fingerprint {ds['fingerprint']})"
              + (f"; splits: {source['splits']}." if "splits" in source else "."))
    rows = table_rows(results)

    md = [f"# slimformer optimize — {ds['name']}", "", f"**{text}**", "", "Deploy it:", "", "```sh", *commands, "```",
          "", f"Budget: {sel['budget_text']}.", "", method, "",
          f"![{what} vs latency](charts/quality_latency.svg)", "", "## All variants", "",
          "| " + " | ".join(columns(results)) + " |", "|" + "---|" * len(COLUMNS),
          *("| " + " | ".join(r) + " |" for r in rows), "",
          "![latency distributions](charts/latency.svg)", "", "![throughput](charts/throughput.svg)", ""]
    if notes:
        md += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    md += ["## Machine", "", _machine_line(results), ""]
    write_text(out / "report.md", "\n".join(md))

    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in columns(results))
    table = (f"<table id='metrics'><thead><tr>{head}</tr></thead><tbody>"
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
<h2>{e(what.capitalize())} vs latency</h2>
<div class="chart" id="chart-quality-latency">{charts['quality_latency']}</div>
<h2>All variants</h2>{table}
<h2>Latency distributions</h2><div class="chart" id="chart-latency">{charts['latency']}</div>
<h2>Throughput vs batch size</h2><div class="chart" id="chart-throughput">{charts['throughput']}</div>
{"<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>" if notes else ""}
<h2>Machine</h2><p id="machine">{e(_machine_line(results))}</p>
<p class="muted">{e(results['tool'])}, {e(results['created'])}</p>
</body></html>
"""
    write_text(out / "report.html", page)
