"""Paired statistics for ``compare``: is a strategy better than the baseline, and by how much?

* ``paired_bootstrap``: the difference of a pooled metric (``sum(num) / sum(den)`` over
  seeds and eval records, as ``evaluation.metrics.record_ratios`` defines every metric)
  between a strategy and the baseline, with a 95% percentile interval from a
  hierarchical bootstrap of the crossed design: every seed is judged on the same eval
  records, so each replicate draws seeds with replacement and, independently, one set of
  eval records with replacement that every drawn seed uses (Owen's "pigeonhole"
  bootstrap), and applies the same draw to both sides (same seed, same record), so both
  sources of variance count and what they share cancels. A record's effect on the
  difference is shared by the seeds (a receipt that grounding fixes is fixed on every
  seed); drawing records anew within each seed would average it away and make the
  interval too narrow by up to sqrt(seeds). The crossed draw errs the other way: where
  records share no effect at all (pure seed-by-record noise) its interval is about 1.3x
  the cells' own spread with three seeds (tests/test_stats.py): conservative.
  ``numpy.random.Generator`` with a fixed seed: the same data gives the same report.
  With one seed only record variance is counted; with two or three, the seed level
  under-counts seed variance (a bootstrap of n values has (n - 1) / n of their variance).
  Records that are not independent draws (receipts of one shop, pages of one document)
  make that interval too narrow: given each record's cluster, a replicate draws clusters
  with replacement instead, each with all its records (``compare --cluster-by``).
* ``interval``: mean and 95% Student-t half-width over seeds, for the levels.
* ``seed_difference``: for numbers measured once per run (value loss, steps, time)
  there are no records to resample, and a bootstrap of 2-5 seed differences cannot be
  wider than their range, so these get the mean paired difference with a Student-t
  interval over seeds.
* ``Difference.detectable``: the smallest true difference the study would detect with 80%
  power in a two-sided test at alpha 0.05, ``(z_0.975 + z_0.80) * SE = 2.80 * SE`` with
  SE the bootstrap standard deviation of the difference (with ``seed_difference``: t
  quantiles with seeds - 1 degrees of freedom, SE = sd / sqrt(seeds)).
* ``mcnemar``: the exact McNemar test on paired 0/1 outcomes (binomial test of the
  discordant pairs against 1/2).
* ``verdict``: "resolved" when the 95% interval excludes 0, else "not resolved" with the
  detectable difference. When every seed gives the same non-zero run-level difference
  (steps measured every 25 steps often do), the Student-t interval has zero width and
  proves nothing; then only the exact sign test is left, which needs 6 seeds agreeing
  to reach p < 0.05.
* ``steps_to_convergence``: the first evaluation reaching 95% of the run's final value.

Try it: ``python -m model_garden.experiments.stats 8 2`` (McNemar with b=8, c=2)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest, norm, t

N_BOOT = 4000
BOOT_SEED = 0
CELLS_PER_CHUNK = 2_000_000  # resampled (seed, record) cells held at once: about 16 MB per array
POWER = 0.80
ALPHA = 0.05
SEED_T = "Student t over seeds"


@dataclass
class Difference:
    """A paired difference (strategy - baseline) and how sure it is.

    Attributes:
        diff: The point estimate (on the full data).
        low, high: Its 95% interval; ``None`` when it cannot be computed (one seed, no records).
        se: Its standard error (bootstrap standard deviation, or sd / sqrt(seeds)).
        detectable: The smallest true difference detectable with 80% power at alpha 0.05.
        method: ``hierarchical bootstrap`` or ``Student t over seeds``.
        seeds, records: What was paired (records per seed; 0 for run-level numbers).
    """

    diff: float
    low: float | None
    high: float | None
    se: float | None
    detectable: float | None
    method: str
    seeds: int
    records: int = 0

    @property
    def unanimous(self) -> bool:
        """Every seed gave the same non-zero difference, so the t interval has zero width."""
        return self.method == SEED_T and self.se == 0 and self.diff != 0

    @property
    def sign_p(self) -> float:
        """Two-sided exact sign test of ``seeds`` differences all of one sign."""
        return min(1.0, 0.5 ** (self.seeds - 1))

    @property
    def resolved(self) -> bool:
        """Whether the 95% interval excludes zero (for unanimous seeds: the sign test)."""
        if self.unanimous:
            return self.sign_p < ALPHA
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"resolved": self.resolved}


def _pooled(num: np.ndarray, den: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    total = den.sum(axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, num.sum(axes) / total, np.nan)


def paired_bootstrap(
    strategy: tuple[np.ndarray, np.ndarray],
    baseline: tuple[np.ndarray, np.ndarray],
    *,
    clusters: Sequence[object] | None = None,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
) -> Difference | None:
    """Hierarchical paired bootstrap of a pooled metric's difference.

    Args:
        strategy, baseline: ``(num, den)`` arrays of shape (seeds, records), row k of both
            from the same seed, column j from the same eval record; the metric of a set
            of (seed, record) cells is ``sum(num) / sum(den)``.
        clusters: Per record (column), its cluster; records are then drawn a cluster at
            a time (module docstring). ``None``: every record is its own cluster.
        n_boot: Replicates.
        seed: Seed of the resampling generator.

    Returns:
        The difference; ``None`` when either side counts nothing (all denominators 0).
    """
    (num_a, den_a), (num_b, den_b) = (tuple(np.asarray(x, dtype=float) for x in side) for side in (strategy, baseline))
    if num_a.shape != num_b.shape or num_a.ndim != 2:
        raise ValueError(f"paired arrays must share a (seeds, records) shape; got {num_a.shape} and {num_b.shape}")
    point = _pooled(num_a, den_a, (0, 1)) - _pooled(num_b, den_b, (0, 1))
    if np.isnan(point):
        return None
    n_seeds, n_records = num_a.shape
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    chunk = max(1, CELLS_PER_CHUNK // (n_seeds * n_records))
    if clusters is not None and len(clusters) != n_records:
        raise ValueError(f"{len(clusters)} clusters for {n_records} records")
    # Each record's cluster, numbered 0..k-1; without clusters, each record is one.
    cluster_of = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)[1] if clusters is not None else None
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        seeds = rng.integers(0, n_seeds, size=(size, n_seeds, 1))  # seeds drawn per replicate
        if cluster_of is None:
            records = rng.integers(0, n_records, size=(size, 1, n_records))  # one draw of records, for every seed
            reps[start : start + size] = _pooled(num_a[seeds, records], den_a[seeds, records], (1, 2)) - _pooled(
                num_b[seeds, records], den_b[seeds, records], (1, 2)
            )
            continue
        k = int(cluster_of.max()) + 1
        # A cluster drawn m times counts each of its records m times: weights, not copies.
        weight = rng.multinomial(k, np.full(k, 1 / k), size=(size, 1))[:, :, cluster_of]  # one draw, for every seed
        reps[start : start + size] = _pooled(num_a[seeds[..., 0]] * weight, den_a[seeds[..., 0]] * weight, (1, 2)) - _pooled(
            num_b[seeds[..., 0]] * weight, den_b[seeds[..., 0]] * weight, (1, 2)
        )
    reps = reps[~np.isnan(reps)]  # a replicate whose draw counts nothing on one side (rare)
    low, high = np.quantile(reps, [0.025, 0.975])
    se = float(np.std(reps, ddof=1))
    z = norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)
    method = "hierarchical bootstrap" if cluster_of is None else f"hierarchical bootstrap over {int(cluster_of.max()) + 1} clusters"
    return Difference(float(point), float(low), float(high), se, float(z * se), method, n_seeds, n_records)


def interval(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None with one value)."""
    kept = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if kept.size == 0:
        return None, None
    if kept.size == 1:
        return float(kept[0]), None
    return float(kept.mean()), float(t.ppf(1 - ALPHA / 2, kept.size - 1) * kept.std(ddof=1) / math.sqrt(kept.size))


def seed_difference(diffs: Sequence[float | None]) -> Difference | None:
    """Mean of per-seed paired differences with a Student-t 95% interval (None if empty)."""
    mean, half = interval(diffs)
    if mean is None:
        return None
    n = sum(d is not None and not math.isnan(d) for d in diffs)
    if half is None:
        return Difference(mean, None, None, None, None, SEED_T, n)
    q = float(t.ppf(1 - ALPHA / 2, n - 1))
    se = half / q
    return Difference(mean, mean - half, mean + half, se, (q + float(t.ppf(POWER, n - 1))) * se, SEED_T, n)


def mcnemar(strategy: Sequence[int], baseline: Sequence[int]) -> dict[str, float | int]:
    """Exact McNemar test on paired 0/1 outcomes.

    Returns:
        ``b`` (strategy right, baseline wrong), ``c`` (the reverse) and the two-sided
        exact ``p`` (binomial test of b among b + c discordant pairs; 1.0 without any).
    """
    a, o = np.asarray(strategy, dtype=bool), np.asarray(baseline, dtype=bool)
    b, c = int((a & ~o).sum()), int((~a & o).sum())
    return {"b": b, "c": c, "p": float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0}


def verdict(
    d: Difference | None, name: str, *, higher_is_better: bool, scale: float = 1.0, digits: int = 3, unit: str = ""
) -> str:
    """The difference in plain words, e.g. ``resolved: moderate better by 3.9 points [+1.2, +6.5]``.

    Args:
        d: The difference (``None``: nothing was paired).
        name: The strategy compared with the baseline.
        higher_is_better: The metric's direction.
        scale, digits, unit: How to print amounts (100, 1, "points" for rates).
    """
    if d is None:
        return "no paired data"

    def amount(x: float, sign: str = "") -> str:
        return f"{x * scale:{sign}.{digits}f}" + (f" {unit}" if unit else "")

    if d.low is None or d.high is None:
        return f"not resolved: {amount(d.diff, '+')} on one seed, no interval"
    if d.unanimous:
        better = (d.diff > 0) == higher_is_better
        head = f"resolved: {name} {'better' if better else 'worse'} by {amount(abs(d.diff))}" if d.resolved else (
            f"not resolved: {amount(d.diff, '+')}"
        )
        return f"{head} on each of the {d.seeds} seeds (equal differences give a zero-width t interval; exact sign test p = {d.sign_p:.3g})"
    span = f"[{d.low * scale:+.{digits}f}, {d.high * scale:+.{digits}f}]"
    if d.resolved:
        better = (d.diff > 0) == higher_is_better
        return f"resolved: {name} {'better' if better else 'worse'} by {amount(abs(d.diff))} {span}"
    if d.se == 0:
        return f"no difference: every paired outcome is equal {span}"
    return f"not resolved: {amount(d.diff, '+')} {span}; the study could have detected about {amount(d.detectable or 0.0)}"


def steps_to_convergence(curve: Sequence[Sequence[float]], fraction: float = 0.95, *, higher_is_better: bool = True) -> int | None:
    """The first step at which a curve reaches ``fraction`` of its final value.

    Args:
        curve: ``(step, value)`` points in step order, e.g. decoded field accuracy.
        fraction: How close to the final value counts as converged.
        higher_is_better: For a loss, "reaching 95%" means ``value <= final / 0.95``.

    Returns:
        The step; ``None`` for an empty curve or, when higher is better, a final value
        of 0 or less (nothing was learned to converge to).
    """
    if not curve or (higher_is_better and curve[-1][1] <= 0):
        return None
    final = curve[-1][1]
    reached = (s for s, v in curve if (v >= fraction * final if higher_is_better else v * fraction <= final))
    return next((int(s) for s in reached), None)


if __name__ == "__main__":
    b, c = int(sys.argv[1]), int(sys.argv[2])
    print(mcnemar([1] * b + [0] * c, [0] * b + [1] * c))
