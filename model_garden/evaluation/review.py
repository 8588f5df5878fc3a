"""A review page for predictions: one self-contained HTML file showing which fields to check.

``write_review(predictions, dataset, out)`` reads a predictions JSONL (``line``, ``output``
and, when the decoder wrote them, ``confidence`` and ``spans`` keyed by JSON Pointer; see
``inference.pointers``) and its dataset, and writes a page with every predicted record: its
fields (gold; prediction with the differing characters marked; confidence; right or wrong,
and how: ``evaluation.errors``), its source text with each grounded value's span
highlighted, and its images. Nobody checks every field, so records come least confident
first (invalid outputs before all), and the page filters to wrong fields, to fields below
a confidence, to one field, to one kind of wrong, or to the fields ``predict --review-at``
marked.

Values are compared as ``evaluation.metrics`` does (``normalize``; missing counts as empty;
an invalid output is wrong everywhere), but per leaf: a list item is a row of its own. The
page fetches nothing (inline style and script, images as ``data:`` URIs of at most
``MAX_IMAGE_SIDE`` pixels) and escapes every text, so a value holding ``</script>`` is text.

Try it: ``python -m model_garden.evaluation.review PREDS.jsonl DATASET.jsonl review.html``
"""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from difflib import SequenceMatcher
from html import escape
from pathlib import Path
from typing import Any, NamedTuple

from PIL import Image

from model_garden.data.images import data_uri
from model_garden.data.sample import SOURCE_FIELD, DataError, Sample
from model_garden.data.sources import open_source
from model_garden.evaluation.errors import KINDS, error_kind
from model_garden.evaluation.metrics import normalize
from model_garden.evaluation.report import parse_output, read_prediction_rows
from model_garden.inference.pointers import leaves, metric_field
from model_garden.masking.codec import ChatCodec

MAX_IMAGE_SIDE = 1000  # pixels on the long side: enough to read a receipt, small enough to embed
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "review"  # the page's style and script, inlined
ABSENT = object()  # a pointer the gold or the prediction does not have (unlike a null value)


@dataclass(frozen=True)
class Prediction:
    """One line of a predictions file, with ``where`` (``file:line``) for messages."""

    output: str
    confidence: dict[str, float]
    spans: dict[str, Any]
    where: str
    needs_review: tuple[str, ...] | None = None  # predict --review-at's pointers ("": all)


@dataclass(frozen=True)
class Row:
    """One leaf value: ``gold`` and ``pred`` are ``ABSENT`` where the pointer is not there;
    ``correct`` is ``None`` when the record has no JSON gold; ``kind`` says how a wrong
    value is wrong (``evaluation.errors``)."""

    pointer: str
    gold: Any
    pred: Any
    confidence: float | None
    correct: bool | None
    kind: str | None = None
    review: bool | None = None  # predict --review-at marked it (None: no marks)


def read_predictions(path: Path) -> dict[int, Prediction]:
    """``{dataset line: Prediction}`` (``read_prediction_rows``); confidences and spans
    that are not objects keyed by JSON Pointer are a ``DataError`` naming the line."""
    preds: dict[int, Prediction] = {}
    for line, (obj, where) in read_prediction_rows(path).items():
        confidence, spans, review = obj.get("confidence") or {}, obj.get("spans") or {}, obj.get("needs_review")
        if not (isinstance(spans, dict) and isinstance(confidence, dict) and all(type(c) in (int, float) for c in confidence.values())):
            raise DataError(f"{where}: 'confidence' and 'spans' must be objects keyed by JSON Pointer, confidences numbers")
        if review is not None and not (isinstance(review, list) and all(isinstance(p, str) for p in review)):
            raise DataError(f"{where}: 'needs_review' must be a list of JSON Pointers")
        preds[line] = Prediction(obj["output"], confidence, spans, where, None if review is None else tuple(review))
    return preds


def _meta(predictions: Path) -> dict[str, Any]:
    """``PREDICTIONS.meta.json``, written by predict (``{}`` without one; older ones lack keys)."""
    meta = predictions.with_name(predictions.name + ".meta.json")
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


def field_rows(gold_text: str | None, pred: Prediction, source: str | None = None) -> list[Row]:
    """The union of gold and predicted leaves, gold order first, each judged; a wrong one
    gets its kind, ``gold_not_in_source`` only when the record's ``source`` text is given."""
    text = None if source is None else normalize(source)
    gold = {leaf.pointer: leaf.value for leaf in leaves(gold_text)} if gold_text is not None else {}
    valid = parse_output(pred.output) is not None
    predicted = {leaf.pointer: leaf.value for leaf in leaves(pred.output)} if valid else {}
    rows = []
    for pointer in dict.fromkeys([*gold, *predicted]):
        sibling = pointer.removesuffix("/confidence_score") + "/contents"
        if pointer.endswith("/confidence_score") and (sibling in gold or sibling in predicted):
            continue  # the model's confidence, which predict fills in: shown as the row's confidence, not judged
        correct = None if gold_text is None else valid and normalize(gold.get(pointer)) == normalize(predicted.get(pointer))
        kind = None if correct is not False else "invalid" if not valid else error_kind(predicted.get(pointer), gold.get(pointer), text)
        review = None if pred.needs_review is None else "" in pred.needs_review or pointer in pred.needs_review
        rows.append(Row(pointer, gold.get(pointer, ABSENT), predicted.get(pointer, ABSENT), pred.confidence.get(pointer), correct, kind, review))
    return rows


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _value_html(value: Any) -> str:
    return '<span class="missing">missing</span>' if value is ABSENT else escape(_text(value))


def _diff_html(gold: str, pred: str) -> str:
    """``pred`` with what differs from ``gold`` marked: ``<del>`` gold's, ``<ins>`` its own."""
    parts = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, gold, pred, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(escape(pred[j1:j2]))
            continue
        if i2 > i1:
            parts.append(f"<del>{escape(gold[i1:i2])}</del>")
        if j2 > j1:
            parts.append(f"<ins>{escape(pred[j1:j2])}</ins>")
    return "".join(parts)


def _row_html(row: Row) -> str:
    conf = "" if row.confidence is None else f"{row.confidence:.2f}"
    # hue 0 (red) at confidence 0 to 120 (green) at 1
    colour = "" if row.confidence is None else f' style="background:hsl({120 * row.confidence:.0f},70%,80%)"'
    if row.correct is False and row.gold is not ABSENT and row.pred is not ABSENT:
        pred = _diff_html(_text(row.gold), _text(row.pred))
    else:
        pred = _value_html(row.pred)
    verdict = {True: "right", False: f"wrong: {(row.kind or '').replace('_', ' ')}", None: "no gold"}[row.correct]
    correct = "" if row.correct is None else str(row.correct).lower()
    review = "" if row.review is None else str(row.review).lower()
    return (
        f'<tr class="field" data-pointer="{escape(row.pointer)}" data-field="{escape(metric_field(row.pointer))}" '
        f'data-correct="{correct}" data-confidence="{conf}" data-review="{review}" data-kind="{row.kind or ""}">'
        f"<td><code>{escape(row.pointer)}</code></td><td>{_value_html(row.gold)}</td><td>{pred}</td>"
        f"<td class=\"conf\"{colour}>{conf or '–'}</td><td>{verdict}</td></tr>"
    )


def _source_html(text: str, spans: dict[str, Any], where: str) -> str:
    """The source text with each grounded span in a ``<mark>`` titled by its pointers
    (spans may overlap: two values copied from one place)."""
    for pointer, span in spans.items():
        if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span) and 0 <= span[0] <= span[1] <= len(text)):
            raise DataError(f"{where}: span {span!r} of {pointer} is not [start, end] within the source text ({len(text)} characters)")
    cuts = sorted({0, len(text), *(x for span in spans.values() for x in span)})
    parts = []
    for a, b in zip(cuts, cuts[1:]):
        names = [p for p, (start, end) in spans.items() if start <= a and b <= end]
        piece = escape(text[a:b])
        parts.append(f'<mark title="{escape(", ".join(names))}">{piece}</mark>' if names else piece)
    return "".join(parts)


def _image_uri(image: Image.Image) -> str:
    image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return data_uri(buf.getvalue(), "image/jpeg")


class Section(NamedTuple):
    """One predicted record on the page."""

    key: tuple[bool, bool, float, int]  # sorts the most urgent first
    html: str
    rows: list[Row]
    images: int


def _record(sample: Sample, pred: Prediction, codec: ChatCodec, source_field: str) -> Section:
    text = sample.source_text(source_field)
    rows = field_rows(sample.reply if parse_output(sample.reply) is not None else None, pred, sample.document_text(source_field))
    invalid = parse_output(pred.output) is None
    lowest = min(pred.confidence.values(), default=None)
    images = [_image_uri(image) for image in codec.images(sample)]
    title = f"line {sample.line}" + (f" · id {sample.meta['id']}" if "id" in sample.meta else "")
    title += " · invalid output" if invalid else "" if lowest is None else f" · lowest confidence {lowest:.2f}"
    body = [
        f'<section class="record" data-line="{sample.line}" id="line-{sample.line}"><h2>{escape(title)}</h2>',
        f'<h3>raw output (not one JSON object)</h3><pre class="output">{escape(pred.output)}</pre>' if invalid else "",
        "<table><tr><th>pointer</th><th>gold</th><th>predicted</th><th>confidence</th><th>verdict</th></tr>",
        *map(_row_html, rows),
        "</table>",
        "" if text is None else f'<h3>source text</h3><pre class="source">{_source_html(text, pred.spans, pred.where)}</pre>',
        *(f'<img src="{uri}" alt="image {k} of line {sample.line}">' for k, uri in enumerate(images)),
        "</section>",
    ]
    # Invalid outputs first, then the least confident, then those without confidences.
    key = (not invalid, lowest is None, lowest or 0.0, sample.line)
    return Section(key, "\n".join(body), rows, len(images))


def write_review(
    predictions: str | Path, dataset: str | Path, out: str | Path, *, data_format: str = "auto", allow_outside_paths: bool = False
) -> dict[str, Any]:
    """Write the review page of a predictions file (see the module docstring).

    Args:
        predictions: Predictions JSONL; its ``.meta.json`` names the ``source_field``.
        dataset: The dataset they were made for (any format ``open_source`` reads).
        out: The HTML file to write (replaced whole).
        data_format: ``--data-format`` of the dataset.
        allow_outside_paths: Allow image paths outside the dataset folder.

    Returns:
        ``out``, and the counts of ``records``, ``fields``, ``wrong`` fields and ``images``;
        ``to_review``: the fields ``predict --review-at`` marked, when the file carries marks.

    Raises:
        DataError: a bad predictions line, or a prediction for a line the dataset lacks.
    """
    predictions, out = Path(predictions), Path(out)
    preds = read_predictions(predictions)
    meta = _meta(predictions)
    source_field = meta.get("source_field") or SOURCE_FIELD
    codec = ChatCodec.for_data(None, dataset, allow_outside_paths=allow_outside_paths)
    records = []
    for sample in open_source(dataset, format=data_format, require_reply=False):
        pred = preds.pop(sample.line, None)
        if pred is not None:
            records.append(_record(sample, pred, codec, source_field))
    if preds:
        line, pred = min(preds.items())
        raise DataError(f"{pred.where}: predicts dataset line {line}, but {dataset} has no record on line {line}")
    records.sort(key=lambda r: r.key)
    rows = [row for record in records for row in record.rows]
    summary = {"out": str(out), "records": len(records), "fields": len(rows),
               "wrong": sum(row.correct is False for row in rows), "images": sum(r.images for r in records)}
    marked = any(row.review is not None for row in rows)
    if marked:
        summary["to_review"] = sum(bool(row.review) for row in rows)
        precision = (meta.get("review_at") or {}).get("precision")
        at = f" at {100 * precision:g}% precision" if precision else ""
        review_filter = f'<label><input type="checkbox" id="filter-review"> to review only ({summary["to_review"]} fields{at})</label>'
    else:
        review_filter = ""
    options = "".join(f'<option value="{escape(f)}">{escape(f)}</option>' for f in dict.fromkeys(metric_field(r.pointer) for r in rows))
    kinds = "".join(f'<option value="{k}">{k.replace("_", " ")}</option>' for k in KINDS if any(r.kind == k for r in rows))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>review · {escape(predictions.name)}</title>
<style>{(ASSETS / "review.css").read_text(encoding="utf-8")}</style></head><body>
<h1>review · {escape(predictions.name)}</h1>
<p>{summary['records']} records, {summary['fields']} fields, {summary['wrong']} wrong; least confident first.</p>
<div id="filters">
<label><input type="checkbox" id="filter-wrong"> wrong only</label>
<label>confidence below <input type="number" id="filter-threshold" min="0" max="1" step="0.05"></label>
<label>field <select id="filter-field"><option value="">all</option>{options}</select></label>
<label>wrong how <select id="filter-kind"><option value="">any</option>{kinds}</select></label>
{review_filter}
showing <span id="shown">{summary['records']}</span> records
</div>
{chr(10).join(r.html for r in records)}
<script>{(ASSETS / "review.js").read_text(encoding="utf-8")}</script>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # replaced whole or not at all
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, out)
    return summary


if __name__ == "__main__":
    print(write_review(*sys.argv[1:4]))
