"""Pair ``compare`` runs record by record: the same seed, the same eval records.

A run (from ``compare.run_one``) carries, per decoding, the per-record table of its
evaluation (``records``, see ``evaluation.metrics.score_records``, with each record's
dataset ``line``). ``paired_eval`` stacks one metric's per-record (numerator,
denominator) over the seeds both strategies ran, on the records every run scored, and
bootstraps the difference; ``field_tests`` runs an exact McNemar test per field on the
pooled (seed, record) pairs. McNemar takes the trained models as given: it asks whether
the two disagree on records more one way than the other, not whether that would hold
for other seeds (the bootstrap counts seeds), and its p-values are per field, not
adjusted for the number of fields.

``across_decodings`` pairs two decodings of the same runs instead (grounded against the
plain constraint, say): the same models on the same records, so only the decoding differs.

``record_clusters`` reads each judged record's cluster (``compare --cluster-by``) for a
bootstrap that resamples clusters of records rather than records (``experiments.stats``).

Try it: see ``tests/test_stats.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from model_garden.data.sample import DataError
from model_garden.data.sources import open_source
from model_garden.evaluation.metrics import record_ratios
from model_garden.inference.pointers import resolve
from model_garden.experiments.stats import Difference, mcnemar, paired_bootstrap

Run = dict[str, Any]


def _cluster(sample: Any, key: str) -> Any:
    if not key.startswith("/"):
        return sample.meta.get(key)
    try:
        return resolve(json.loads(sample.reply), key)
    except ValueError:  # a reply that is not JSON has no such value
        return None


def record_clusters(dataset: str | Path, key: str) -> dict[int, str]:
    """Each record's cluster (by its 1-based dataset line): the record's top-level ``key``,
    or, for a JSON Pointer (``/company``), that value of its gold reply.

    Raises:
        DataError: a record without it, naming the record and the flag.
    """
    clusters = {}
    for i, sample in enumerate(open_source(dataset), start=1):
        value = _cluster(sample, key)
        if value is None:
            raise DataError(f"{sample.where}: --cluster-by {key}: the record has no such {'value in its reply' if key.startswith('/') else 'key'}")
        clusters[sample.line or i] = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return clusters


def aligned(runs: list[Run], decoding: str) -> list[np.ndarray] | None:
    """For each run, the row indexes of the eval records every run scored, in one order;
    None when a run has no per-record outcomes (a report from before they existed)."""
    tables = [(r.get("records") or {}).get(decoding) for r in runs]
    if any(t is None for t in tables):
        return None
    lines = [list(t.get("line", range(len(t["json_valid"])))) for t in tables]
    shared = set(lines[0]).intersection(*lines[1:])
    common = [x for x in lines[0] if x in shared]
    indexes = [{x: i for i, x in enumerate(ls)} for ls in lines]
    return [np.array([index[x] for x in common], dtype=int) for index in indexes]


def paired_eval(
    strategy_runs: list[Run], base_runs: list[Run], decoding: str, key: str, clusters: dict[int, str] | None = None
) -> Difference | None:
    """Hierarchical bootstrap of a decoded metric's difference over the seeds both ran
    (``strategy_runs[k]`` and ``base_runs[k]`` share a seed); None without records, or
    for a metric that is not a ratio of per-record sums (confidence AUROC, say).
    ``clusters`` (eval record's dataset line -> its cluster) resamples clusters of records."""
    rows = aligned(strategy_runs + base_runs, decoding)
    if rows is None or not len(rows[0]) or key not in record_ratios(strategy_runs[0]["records"][decoding]):
        return None

    def side(runs: list[Run], idx: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        ratios = [record_ratios(r["records"][decoding])[key] for r in runs]  # (num, den) per seed
        return np.stack([num[i] for (num, _), i in zip(ratios, idx)]), np.stack([den[i] for (_, den), i in zip(ratios, idx)])

    n = len(strategy_runs)
    first = strategy_runs[0]["records"][decoding]
    lines = list(first.get("line", range(len(first["json_valid"]))))
    if clusters is not None and (gone := [lines[i] for i in rows[0] if lines[i] not in clusters]):
        raise DataError(f"--cluster-by: the judged dataset has no record at line {gone[0]}, which the runs scored; was it changed after them?")
    of = [clusters[lines[i]] for i in rows[0]] if clusters is not None else None
    return paired_bootstrap(side(strategy_runs, rows[:n]), side(base_runs, rows[n:]), clusters=of)


def _correct(run: Run, decoding: str, name: str) -> np.ndarray:
    """A field's 0/1 outcome per record; NaN where the record's gold has no such field."""
    table = run["records"][decoding]
    return np.array(table["fields"].get(name, {}).get("correct", [None] * len(table["json_valid"])), dtype=float)


def field_tests(strategy_runs: list[Run], base_runs: list[Run], decoding: str) -> dict[str, dict[str, Any]]:
    """Per field of the baseline's golds: McNemar's ``b``, ``c``, ``p`` and the number of
    (seed, record) ``pairs`` where both runs scored the field; {} without records."""
    rows = aligned(strategy_runs + base_runs, decoding)
    if rows is None:
        return {}
    n = len(strategy_runs)
    fields = list(dict.fromkeys(f for r in base_runs for f in r["records"][decoding]["fields"]))
    out = {}
    for name in fields:
        both = np.concatenate([
            np.stack([_correct(mine, decoding, name)[ia], _correct(theirs, decoding, name)[ib]], axis=1)
            for mine, theirs, ia, ib in zip(strategy_runs, base_runs, rows[:n], rows[n:])
        ])
        both = both[~np.isnan(both).any(axis=1)]
        out[name] = mcnemar(both[:, 0], both[:, 1]) | {"pairs": int(len(both))}
    return out


def across_decodings(runs: list[Run], decoding: str, base: str, clusters: dict[int, str] | None = None) -> dict[str, Any] | None:
    """``decoding`` against ``base`` on the same runs (one per seed): the bootstrapped
    difference of field accuracy and JSON validity, and McNemar per field; None unless
    every run holds per-record outcomes of both."""
    if not runs or any(not {decoding, base} <= set(r.get("records") or {}) for r in runs):
        return None
    # Both sides under the name ``base``, so paired_eval and field_tests pair them as two strategies.
    mine, theirs = ([{**r, "records": {base: r["records"][d]}} for r in runs] for d in (decoding, base))
    return {
        "differences": {key: paired_eval(mine, theirs, base, key, clusters) for key in ("field_accuracy", "json_valid")},
        "mcnemar": field_tests(mine, theirs, base),
    }
