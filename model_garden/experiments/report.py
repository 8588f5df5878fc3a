"""A comparison's report, from ``experiments.summary``'s summary: a rich table for the
terminal, and ``report.md`` with the method, the verdicts, per-field McNemar tables, the
second decoding against the first and the wrong fields by kind, beside ``summary.json``
and the PNG plots.

Try it: ``python -c "import json; from model_garden.experiments.report import markdown; print(markdown(json.load(open('OUT/summary.json'))))"``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from model_garden.evaluation.errors import KINDS
from model_garden.experiments.plots import plot
from model_garden.experiments.summary import EVAL_METRICS, TRAIN_METRICS, units

def _fmt(cell: dict[str, Any], key: str, runs: int) -> str:
    """``mean ± CI (paired difference [95% interval])`` in the metric's units, and on how
    many of the strategy's ``runs`` the number exists when not on all of them."""
    m = cell["mean"]
    if m is None:
        return "–"
    u = units(key)
    scale, digits = u["scale"], u["digits"]
    text = f"{m * scale:.{digits}f}"
    if cell["ci"] is not None:
        text += f" ± {cell['ci'] * scale:.{digits}f}"
    paired = cell.get("paired")
    if paired:
        text += f" ({paired['diff'] * scale:+.{digits}f}"
        text += f" [{paired['low'] * scale:+.{digits}f}, {paired['high'] * scale:+.{digits}f}])" if paired["low"] is not None else ")"
    if cell["n"] < runs:
        text += f" ({cell['n']} of {runs} runs)"
    return text


def _label(summary: dict[str, Any], key: str) -> str:
    labels = {k: (lab, h) for k, lab, h in TRAIN_METRICS}
    labels |= {f"{d}/{k}": (f"{d}: {lab}", h) for d in summary["decodings"] for k, lab, h in EVAL_METRICS}
    label, higher = labels[key]
    if key == "steps_to_convergence":
        label = summary.get("convergence", label)
    return f"{label} {'↑' if higher else '↓'}"


def _keys(summary: dict[str, Any]) -> list[str]:
    return [k for k, _, _ in TRAIN_METRICS] + [f"{d}/{k}" for d in summary["decodings"] for k, _, _ in EVAL_METRICS]


def _run_counts(summary: dict[str, Any]) -> dict[str, int]:
    return {s: sum(name.rsplit("-seed", 1)[0] == s for name in summary["runs"]) for s in summary["strategies"]}


def _row(summary: dict[str, Any], key: str) -> list[str]:
    counts = _run_counts(summary)
    return [_fmt(summary["table"][s][key], key, counts[s]) for s in summary["strategies"]]


def _headers(summary: dict[str, Any]) -> list[str]:
    """Strategy names, with their number of seeds when strategies differ in it."""
    counts = _run_counts(summary)
    if len(set(counts.values())) == 1:
        return list(summary["strategies"])
    return [f"{s} ({n} seed{'s' if n != 1 else ''})" for s, n in counts.items()]


def rich_table(summary: dict[str, Any]) -> Table:
    """The comparison as a rich table."""
    table = Table(title=f"mean ± 95% CI over seeds {summary['seeds']} (paired difference vs {summary['baseline']} [95% interval])")
    table.add_column("metric")
    for header in _headers(summary):
        table.add_column(header, justify="right")
    for key in _keys(summary):
        table.add_row(_label(summary, key), *_row(summary, key))
    return table


def _method(summary: dict[str, Any]) -> str:
    boot = summary.get("bootstrap", {})
    clustered = (
        f" Eval records are not independent draws here: each draw takes a cluster of them (`--cluster-by "
        f"{summary.get('config', {}).get('cluster_by')}`, {boot['clusters']} clusters) with all its records."
        if boot.get("clusters")
        else ""
    )
    return (
        "Decoded metrics: the difference of the metric pooled over seeds and eval records, with the 2.5th and 97.5th "
        f"percentiles of {boot.get('replicates')} hierarchical bootstrap replicates (seeds drawn with replacement and, "
        "independently, one draw of eval records with replacement used by every drawn seed, since every seed is judged on "
        "the same records; the same draw for both strategies, so each is paired with the baseline on the same seed and "
        f"record; generator seed {boot.get('seed')}). With one seed only record variance is "
        "counted, and with two or three the seed level under-counts it. Run-level numbers (value loss, steps, time) and "
        "runs without per-record outcomes: mean of per-seed differences with a Student-t interval. A difference is "
        "*resolved* when its 95% interval excludes 0. Where it is not, \"could have detected\" is the smallest true "
        "difference a two-sided test at alpha 0.05 would find with 80% power: (z(0.975) + z(0.80)) x SE = 2.80 x the "
        "bootstrap standard error (t quantiles for Student-t intervals)." + clustered
    )


def _verdicts(summary: dict[str, Any]) -> list[str]:
    baseline, lines = summary["baseline"], []
    for strategy in summary["strategies"][1:]:
        lines += [f"### `{strategy}` against `{baseline}`", "", "| metric | verdict |", "|---|---|"]
        lines += [f"| {_label(summary, k)} | {summary['table'][strategy][k].get('verdict', '–')} |" for k in _keys(summary)]
        lines.append("")
    return lines


def _mcnemar_tables(summary: dict[str, Any]) -> list[str]:
    tests, lines = summary.get("mcnemar", {}), []
    strategies = [s for s in summary["strategies"][1:] if s in tests]
    for decoding in summary["decodings"]:
        fields = list(dict.fromkeys(f for s in strategies for f in tests[s].get(decoding, {})))
        if not fields:
            continue
        lines += [
            f"### Per-field exact McNemar tests, {decoding} decoding",
            "",
            f"b = (seed, record) pairs the strategy got right and `{summary['baseline']}` wrong, c = the reverse; "
            "two-sided exact p (binomial test on b + c), per field, not adjusted for the number of fields.",
            "",
            "| field | " + " | ".join(f"`{s}`: b / c, p" for s in strategies) + " |",
            "|---|" + "---:|" * len(strategies),
        ]
        for name in fields:
            cells = [tests[s][decoding].get(name) for s in strategies]
            lines.append(f"| {name} | " + " | ".join(f"{c['b']} / {c['c']}, p = {c['p']:.3g}" if c else "–" for c in cells) + " |")
        lines.append("")
    return lines


def _across_decodings(summary: dict[str, Any]) -> list[str]:
    labels, lines = {k: label for k, label, _ in EVAL_METRICS}, []
    for strategy, per_decoding in summary.get("across_decodings", {}).items():
        base = summary["decodings"][0]
        for decoding, res in per_decoding.items():
            lines += [
                f"### `{decoding}` against `{base}` decoding, on the `{strategy}` runs",
                "",
                "The same models on the same records, so only the decoding differs; the same bootstrap and McNemar "
                f"tests as above, with `{decoding}` in the strategy's place and `{base}` in the baseline's.",
                "",
                "| metric | verdict |",
                "|---|---|",
            ]
            lines += [f"| {labels[k]} | {cell['verdict'] if cell else 'no paired data'} |" for k, cell in res["differences"].items()]
            lines += ["", "| field | b / c, p |", "|---|---:|"]
            lines += [f"| {name} | {t['b']} / {t['c']}, p = {t['p']:.3g} |" for name, t in res["mcnemar"].items()]
            lines.append("")
    return lines


def _errors(summary: dict[str, Any]) -> list[str]:
    """The wrong fields by kind, mean count per run of each strategy and decoding."""
    rows = [(s, d, counts) for s, per in summary.get("errors", {}).items() for d, counts in per.items() if counts]
    if not rows:
        return []
    lines = [
        "## Wrong fields by kind",
        "",
        "Mean number per run (`evaluate`'s kinds: docs/review.md, \"What kind of wrong\"): `gold not in source` is a label "
        "that is no span of the record's text, which grounded decoding cannot write; `boundary`, one value contains the other.",
        "",
        "| strategy | decoding | " + " | ".join(k.replace("_", " ") for k in KINDS) + " |",
        "|---|---|" + "---:|" * len(KINDS),
    ]
    lines += [f"| {s} | {d} | " + " | ".join(f"{counts.get(k, 0):.1f}" for k in KINDS) + " |" for s, d, counts in rows]
    return lines + [""]


def markdown(summary: dict[str, Any]) -> str:
    """The report body."""
    hw = summary["hardware"]
    cfg = summary.get("config", {})
    # TrainConfig.to_dict() groups its fields (model, lora, data, optim, run, ...).
    train = {k: v for group in cfg.get("train", {}).values() if isinstance(group, dict) for k, v in group.items()}
    lines = [
        "# Strategy comparison",
        "",
        f"- training data: `{train.get('dataset')}`; eval data: `{train.get('eval_dataset')}`"
        + (f"; judged on `{cfg['test_dataset']}`" if cfg.get("test_dataset") else "")
        + (f"; confidence calibrated on `{cfg['calibration_dataset']}`" if cfg.get("calibration_dataset") else ""),
        f"- base model: `{train.get('base_model')}`; LoRA r={train.get('lora_r')}"
        + (" (full fine-tune)" if train.get("full_finetune") else "")
        + f"; lr {train.get('lr')}; batch {train.get('batch_size')} x accumulation {train.get('grad_accum')}; "
        + (f"{train.get('max_steps')} steps" if (train.get("max_steps") or -1) > 0 else f"{train.get('epochs')} epoch(s)"),
        f"- seeds: {summary['seeds']}; evaluation every {train.get('eval_steps')} steps"
        + (f" (decoding {train['eval_generate']} examples)" if train.get("eval_generate") else "")
        + f"; final decoding: {cfg.get('predict_limit') or 'all'} examples, max new tokens {cfg.get('max_new_tokens')}",
        f"- hardware: {hw['cpu']}, {hw['cores']} cores, GPU: {hw['gpu'] or 'none'}, torch {hw['torch']}",
        "",
        f"Cells: mean ± 95% Student-t interval over seeds; in brackets the paired difference vs `{summary['baseline']}` "
        "with its 95% interval (see *Paired differences*). Rates in percent, differences in percentage points. "
        "↑ higher is better, ↓ lower is better. An output that is not one JSON object scores zero on every field. "
        "The eval value loss is measured on the value tokens of the eval set for every strategy, so it is comparable "
        "across masks. \"k of n runs\": the number exists on k of the strategy's runs only (steps to the baseline's "
        "best: the other runs never reached it).",
        "",
    ]
    if summary.get("shared"):
        pairs = ", ".join(f"{a} = {b}" for a, b in summary["shared"].items())
        lines += [
            "Shared runs (the masks are equal on every training example: same ids, labels, weights and token "
            f"classes, so training would compute the same thing): {pairs}.",
            "",
        ]
    if summary.get("missing"):
        lines += [f"Not run (so left out of every mean): {', '.join(summary['missing'])}.", ""]
    lines += ["| metric | " + " | ".join(_headers(summary)) + " |", "|---|" + "---:|" * len(summary["strategies"])]
    for k in _keys(summary):
        lines.append(f"| {_label(summary, k)} | " + " | ".join(_row(summary, k)) + " |")
    lines += ["", "## Paired differences", "", _method(summary), ""] + _verdicts(summary) + _mcnemar_tables(summary)
    lines += _across_decodings(summary) + _errors(summary)
    lines += ["## Plots", "", "![eval value loss](loss_curves.png)", "", "![per-field accuracy](field_accuracy.png)", ""]
    if any(c for per_seed in summary.get("decoded_curves", {}).values() for c in per_seed.values()):
        lines += ["![decoded field accuracy during training](decoded_curves.png)", ""]
    return "\n".join(lines)


def write_report(summary: dict[str, Any], out: Path) -> Path:
    """Write ``summary.json``, the plots and ``report.md``; return the report's path."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    plot(summary, out)
    path = out / "report.md"
    path.write_text(markdown(summary), encoding="utf-8")
    return path
