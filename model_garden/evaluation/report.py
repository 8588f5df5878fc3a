"""Evaluate a predictions file against its dataset: the engine of ``model-garden evaluate``.

Predictions are JSONL written by ``model-garden predict``, one object per line:
``{"line": <1-based line of the dataset record>, "output": "<raw reply text>", ...}``
(other keys are ignored). Each output must be exactly one JSON object
(``json.loads(output.strip())``, no ``NaN``); anything else counts as unparseable, a
``None`` prediction, which scores zero on every field. The gold is the record's last
assistant message, parsed the same way. Records without a prediction count as ``None``
predictions too and are listed in the report's ``missing_predictions``.

The JSON report keeps the metrics as fractions (0.745 = 74.5%; CER can exceed 1) and
says so in its ``units`` key; ``report_tables`` prints percentages. Its ``records`` key
holds the per-record table of ``metrics.score_records`` (with each record's dataset
``line``), from which ``compare`` pairs strategies record by record.

Try it: ``python -m model_garden.evaluation.report PREDS.jsonl DATASET.jsonl``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from model_garden.data.jsonl import DataError, Sample
from model_garden.data.sample import SOURCE_FIELD
from model_garden.data.schema import free_strings, load_schema, schema_for
from model_garden.data.sources import open_source
from model_garden.evaluation.errors import KINDS, error_kinds
from model_garden.evaluation.metrics import aggregate, score_records, without_confidence
from model_garden.inference.grounding import normalized_source


def _check_made_for(predictions: Path, source: Any) -> None:
    """Refuse predictions whose ``.meta.json`` says they were made for other data."""
    meta_path = predictions.with_name(predictions.name + ".meta.json")
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("dataset_fingerprint") not in (None, source.fingerprint()):
        raise DataError(
            f"--predictions {predictions} were made for {meta.get('dataset')}, whose content differs from --dataset {source.name} "
            "(fingerprints differ); pass --ignore-dataset-mismatch to score them anyway"
        )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_output(text: str) -> dict[str, Any] | None:
    """The JSON object a reply holds, or ``None`` if it is not exactly one object."""
    try:
        obj = json.loads(text.strip(), parse_constant=_reject_constant)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def read_prediction_rows(path: str | Path, key: str = "line", *, positional: bool = False) -> dict[int, tuple[dict[str, Any], str]]:
    """``{record key: (the prediction's whole line, "file:line" of it)}`` from a
    predictions JSONL (``confidence``, ``spans`` and the rest kept).

    Args:
        path: One ``{key: <int>, "output": <string>, ...}`` object per line.
        key: The field naming the record (``line`` for chat datasets, ``index`` for VTG).
        positional: Allow lines without ``key``: they name the record by their position.

    Raises:
        DataError: on a malformed line or a second prediction for the same record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions {path} not found")
    rows: dict[int, tuple[dict[str, Any], str]] = {}
    position = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                raise DataError(f"{where}: not a JSON line ({exc})") from None
            value = obj.get(key, position if positional else None) if isinstance(obj, dict) else None
            if type(value) is not int or value < 0 or not isinstance(obj.get("output"), str):
                raise DataError(f'{where}: expected {{"{key}": <int >= 0>, "output": <string>, ...}}')
            if value in rows:
                raise DataError(f"{where}: a second prediction for {key} {value} (first: {rows[value][1]})")
            rows[value] = (obj, where)
            position += 1
    return rows


def read_predictions(path: str | Path, key: str = "line", *, positional: bool = False) -> dict[int, tuple[str, str]]:
    """``{record key: (output, "file:line" of the prediction)}``; see ``read_prediction_rows``."""
    return {value: (obj["output"], where) for value, (obj, where) in read_prediction_rows(path, key, positional=positional).items()}


def outside_source(prediction: Any, source: str | None, schema: dict[str, Any] | None = None) -> list[str]:
    """The strings a prediction wrote freely (``free_strings``: an enum's or a const's
    choice is the schema's) that are not a span of ``source`` (line breaks read as
    spaces, as grounded decoding reads them): invented, or changed."""
    if source is None:
        return []
    text, _ = normalized_source(source)
    return [s for s in free_strings(prediction, schema) if s not in text]


def _gold(record: Sample, where: str) -> dict[str, Any]:
    gold = parse_output(record.reply)
    if gold is None:
        raise DataError(f"{where}: the last assistant reply is not a JSON object, so there is no gold to compare with")
    return gold


def evaluate_files(
    predictions: str | Path,
    dataset: str | Path,
    *,
    schema: str | Path | None = None,
    case_insensitive: bool = False,
    predicted_only: bool = False,
    check_dataset: bool = True,
) -> dict[str, Any]:
    """Score a predictions file against its dataset.

    Args:
        predictions: Predictions JSONL (see the module docstring).
        dataset: The chat JSONL the predictions were made for.
        schema: A JSON Schema file for every record; default: the dataset's schema as
            ``model_garden.data.schema.schema_for`` finds it (``schema.json`` beside
            the file, the record's ``schema`` key, or its prompt), per record.
        case_insensitive: Case-fold strings for the field metrics.
        predicted_only: Score only the records that have a prediction (after
            ``predict --limit``); by default a record without one scores as empty.
        check_dataset: Refuse predictions whose ``.meta.json`` (written by ``predict``)
            names another dataset: same length is not the same data.

    Returns:
        The report: the inputs, ``missing_predictions`` and ``unparseable`` (dataset line
        numbers), ``source_check`` (records with a source text checked, and per dataset
        line the freely written string values that are no span of it: ``outside_source``), ``metrics`` (see ``model_garden.evaluation.metrics``) and ``records``
        (the per-record table, with ``line``: the dataset line of each record).

    Raises:
        DataError: naming the file and line of a bad prediction, a prediction for a line
            that holds no record, or a record without a JSON gold.
    """
    dataset = Path(dataset)
    outputs = read_predictions(predictions)
    source = open_source(dataset)
    if check_dataset:
        _check_made_for(Path(predictions), source)
    explicit = load_schema(schema) if schema is not None else None
    meta = Path(f"{predictions}.meta.json")
    source_field = (json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}).get("source_field") or SOURCE_FIELD
    missing, unparseable, preds, golds, schemas, lines, texts = [], [], [], [], [], [], []
    checked, values, outside = 0, 0, {}
    for record in source:
        if predicted_only and record.line not in outputs:
            continue
        golds.append(_gold(record, f"{dataset}:{record.line}"))
        lines.append(record.line)
        schemas.append(explicit if explicit is not None else schema_for(dataset, record))
        output = outputs.pop(record.line, None)
        preds.append(None if output is None else parse_output(output[0]))
        texts.append(record.document_text(source_field))
        if output is None:
            missing.append(record.line)
        elif preds[-1] is None:
            unparseable.append(record.line)
        elif texts[-1] is not None:
            checked += 1
            values += len(free_strings(without_confidence(preds[-1]), schemas[-1]))
            if invented := outside_source(without_confidence(preds[-1]), texts[-1], schemas[-1]):
                outside[record.line] = invented
    if outputs:
        line, (_, where) = min(outputs.items())
        raise DataError(f"{where}: predicts dataset line {line}, but {dataset} has no record on line {line}")
    records = {"line": lines, **score_records(preds, golds, schema=schemas, case_insensitive=case_insensitive)}
    correct = {name: column["correct"] for name, column in records["fields"].items()}
    return {
        "predictions": str(predictions),
        "dataset": str(dataset),
        "schema": str(schema) if schema is not None else "from the dataset",
        "case_insensitive": case_insensitive,
        "predicted_only": predicted_only,
        "missing_predictions": missing,
        "unparseable": unparseable,
        # Against each record's document text (its source_field, else its user turns
        # unless they carry an image or a video: Sample.document_text).
        "source_check": {"records": checked, "values": values, "values_outside": sum(map(len, outside.values())), "outside": outside},
        "units": "metrics are fractions: 0.745 means 74.5% (CER can exceed 1); counts are counts",
        "metrics": aggregate(records),
        "errors": error_kinds(preds, golds, texts, correct, case_insensitive),
        "records": records,
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# Every metric printed here is a rate, shown in percent.
_OVERALL = (
    ("JSON valid", "json_valid"),
    ("schema valid", "schema_valid"),
    ("field accuracy (all fields)", "field_accuracy"),
    ("field accuracy (gold not null)", "field_accuracy_filled"),
    ("CER", "cer"),
    ("ANLS", "anls"),
    ("hallucination rate", "hallucination_rate"),
    ("omission rate", "omission_rate"),
    ("precision (Donut pairs)", "precision"),
    ("recall (Donut pairs)", "recall"),
    ("F1 (Donut pairs)", "f1"),
    ("nTED accuracy (Donut)", "ted_accuracy"),
)


def report_tables(report: dict[str, Any]) -> tuple[Table, Table]:
    """Rich tables of a report, rates in percent: overall metrics, then one row per field."""
    m = report["metrics"]
    overall = Table("metric", "value", title=f"evaluation · {Path(report['predictions']).name}")
    overall.add_row("examples", str(m["n"]))
    for label, key in _OVERALL:
        overall.add_row(label, _pct(m[key]))
    overall.add_row("hallucinations / gold-empty fields", f"{m['hallucinations']} / {m['gold_empty']}")
    overall.add_row("omissions / gold-filled fields", f"{m['omissions']} / {m['gold_filled']}")
    keys = ("accuracy", "accuracy_filled", "cer", "anls", "hallucination_rate", "omission_rate")
    fields = Table(
        "field", "n", "accuracy", "accuracy (gold not null)", "CER", "ANLS", "hallucination", "omission",
        title="per field",
    )
    for name, f in m["per_field"].items():
        fields.add_row(name, str(f["n"]), *(_pct(f[k]) for k in keys))
    return overall, fields


def errors_table(report: dict[str, Any]) -> Table:
    """A Rich table of the wrong fields by kind (``evaluation.errors``), overall then per field."""
    errors = report["errors"]
    table = Table("field", "wrong", *(k.replace("_", " ") for k in KINDS), title="wrong fields by kind (counts)")
    for name, counts in {"all fields": errors["counts"], **errors["per_field"]}.items():
        table.add_row(name, str(sum(counts.values())), *(str(counts[k]) for k in KINDS))
    return table


def confidence_table(section: dict[str, Any]) -> Table:
    """A Rich table of ``evaluate``'s confidence section, overall then per field."""
    at = list(section["at"])
    table = Table("field", "n", "accuracy", "AUROC", "ECE", *(f"accepted at {100 * float(t):g}% (precision)" for t in at),
                  title="confidence" + (f" · calibrated on {section['calibration']['dataset']}" if section.get("calibration") else " · raw (no calibration map)"))

    def row(name: str, s: dict[str, Any]) -> None:
        cells = [f"{_pct(s['at'][t]['coverage'])} ({_pct(s['at'][t]['precision'])})" for t in at]
        table.add_row(name, str(s["n"]), _pct(s["accuracy"]), "–" if s["auroc"] is None else f"{s['auroc']:.3f}", _pct(s["ece"]), *cells)

    row("all fields", section)
    for name, s in section["per_field"].items():
        row(name, s)
    return table


if __name__ == "__main__":
    from rich.console import Console

    for table in report_tables(evaluate_files(sys.argv[1], sys.argv[2])):
        Console().print(table)
