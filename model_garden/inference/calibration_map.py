"""The confidence calibration map that ``predict`` applies to each leaf value's score.

A leaf's raw confidence is an aggregate of its free tokens' probabilities (``product``,
``min`` or ``geomean`` in a prediction's ``scores``); it ranks values but is not the
probability that the value is right. ``model-garden calibrate`` fits, on a calibration
split, a monotone non-decreasing map from one aggregate to the observed field accuracy
(isotonic regression, ``evaluation.calibration``) and saves it as ``calibration.json``
beside the model (the run folder or the export folder).

The map is a list of points ``(x, y)``, x strictly increasing, y non-decreasing in
[0, 1], applied by linear interpolation (``np.interp``); below the first point and above
the last it holds the end values, so a calibrated confidence is always in [0, 1].

Try it: ``python -m model_garden.inference.calibration_map runs/forms/calibration.json 0.9 company``
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_garden.inference.confidence import AGGREGATES
from model_garden.inference.pointers import metric_field

CALIBRATION_FILE = "calibration.json"
Points = tuple[list[float], list[float]]


def _check_points(x: list[float], y: list[float], what: str) -> None:
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.ndim != 1 or xs.shape != ys.shape or not len(xs):
        raise ValueError(f"{what}: x and y must be lists of numbers of the same non-zero length")
    # NaN fails every comparison below, so it is refused too
    if not (np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0) and np.all((ys >= 0) & (ys <= 1))):
        raise ValueError(f"{what}: x must increase strictly and y must not decrease and lie in [0, 1]")


@dataclass
class CalibrationMap:
    """A fitted map from one score aggregate to the probability that a field is right.

    Attributes:
        aggregate: The score in a prediction's ``scores`` it maps: ``product``, ``min``
            or ``geomean``.
        x, y: The pooled map's points, fitted on every field together.
        per_field: ``{dotted field: (x, y)}``: a field's own map, fitted only where the
            calibration split had at least 30 values of that field with at least 3 right
            and 3 wrong; every other field uses the pooled map.
        thresholds: ``{"0.95": t, "0.99": t}``: the lowest calibrated confidence whose
            accepted fields reached that precision on the calibration split, in the
            sense of ``threshold_level`` (``None`` where none did: accept nothing
            automatically).
        threshold_level: The confidence level at which the thresholds' precision is
            certified (a one-sided Clopper-Pearson lower bound on the split reaches the
            target); ``None``: the split's precision itself reached it (a point estimate).
        fitted_on: ``{"dataset": path, "fields": number of field values fitted on}``.
        candidates: ``{aggregate: AUROC}`` of each aggregate on the calibration split
            (``None`` where only one outcome occurred); the best was chosen.
    """

    aggregate: str
    x: list[float]
    y: list[float]
    per_field: dict[str, Points] = field(default_factory=dict)
    thresholds: dict[str, float | None] = field(default_factory=dict)
    fitted_on: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, float | None] = field(default_factory=dict)
    threshold_level: float | None = None

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate {self.aggregate!r} is not one of {', '.join(AGGREGATES)}")
        _check_points(self.x, self.y, "the pooled map")
        for name, (x, y) in self.per_field.items():
            _check_points(x, y, f"the map of field {name!r}")
        if self.threshold_level is not None and not 0 < self.threshold_level < 1:
            raise ValueError(f"threshold_level {self.threshold_level} is not in (0, 1)")
        for target, t in self.thresholds.items():
            if t is not None and not 0 <= t <= 1:
                raise ValueError(f"threshold {target}: {t} is not in [0, 1]")

    def apply(self, field: str, value: float) -> float:
        """The calibrated confidence of a raw ``value`` of this map's aggregate for a
        dotted ``field`` (its own map if it has one, else the pooled one)."""
        x, y = self.per_field.get(field, (self.x, self.y))
        return float(np.interp(value, x, y))

    def calibrate(self, scores: dict[str, dict[str, float]]) -> dict[str, float]:
        """``{pointer: calibrated confidence}`` from a prediction's ``scores``
        (``{pointer: {aggregate: value, ...}}``), each leaf under its field's map."""
        return {pointer: self.apply(metric_field(pointer), s[self.aggregate]) for pointer, s in scores.items()}

    def threshold(self, precision: float) -> float | None:
        """The threshold for ``precision`` (``None``: the split certified none).

        Raises:
            ValueError: when the map has no threshold for ``precision``.
        """
        for key, t in self.thresholds.items():
            if float(key) == precision:
                return t
        have = ", ".join(sorted(self.thresholds)) or "none"
        raise ValueError(f"--review-at {precision:g}: the calibration map has thresholds for {have} only")

    def to_review(self, confidence: dict[str, float], precision: float) -> list[str]:
        """The pointers of ``confidence`` (calibrated, as ``calibrate`` gives them) that a
        person should check to keep ``precision`` on the rest: those below its
        ``threshold``; all of them when the calibration split certified none."""
        t = self.threshold(precision)
        return [pointer for pointer, c in confidence.items() if t is None or c < t]

    def save(self, path: str | Path) -> Path:
        """Write the map as JSON; the file is replaced whole or not at all."""
        path = Path(path)
        data = asdict(self) | {"per_field": {name: {"x": x, "y": y} for name, (x, y) in self.per_field.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationMap:
        """Read a map written by ``save``.

        Raises:
            FileNotFoundError: no such file.
            ValueError: naming the file, when its content is not such a map.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"calibration file {path} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            per_field = {name: (p["x"], p["y"]) for name, p in data.pop("per_field", {}).items()}
            return cls(**data, per_field=per_field)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{path}: not a calibration file written by model-garden calibrate ({exc})") from None


if __name__ == "__main__":
    cmap = CalibrationMap.load(sys.argv[1])
    print(cmap.apply(sys.argv[3] if len(sys.argv) > 3 else "", float(sys.argv[2])))
