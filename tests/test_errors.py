"""Wrong fields sorted by kind (``evaluation.errors``), alone and in ``evaluate``'s report."""

from __future__ import annotations

import json

import pytest

from model_garden.data.sample import Sample
from model_garden.evaluation import evaluate_files
from model_garden.evaluation.errors import KINDS, error_kind, error_kinds
from model_garden.evaluation.metrics import score_records

SOURCE = "KEDAI BUKU TA\nNO 5, JALAN SS2/1\n47300 PETALING JAYA\nTOTAL RM 9.00\nDATE 01/02/2018"


@pytest.mark.parametrize(
    ("pred", "gold", "kind"),
    [
        (None, "9.00", "omitted"),
        ("  ", "9.00", "omitted"),
        ("9.00", None, "hallucinated"),
        # the label is re-spaced: the document never says it so, whatever the model does
        ("NO 5, JALAN SS2/1", "NO 5,JALAN SS2/1", "gold_not_in_source"),
        ("9.00", "RM 9.00", "boundary"),  # a currency sign dropped
        ("NO 5, JALAN SS2/1", "NO 5, JALAN SS2/1 47300 PETALING JAYA", "boundary"),  # cut a line early
        ("NO 5, JALAN SS2/1 47300 PETALING JAYA TOTAL", "NO 5, JALAN SS2/1 47300 PETALING JAYA", "boundary"),
        ("01/02/2018", "47300", "other"),
        ("01/02/2019", "01/02/2018", "other"),  # invented: not in the text either, but the gold is
        (9.0, "9.00", "other"),  # not a string: no containment
    ],
)
def test_error_kind(pred, gold, kind):
    text = " ".join(SOURCE.split())
    assert error_kind(pred, gold, text) == kind


def test_without_a_source_no_gold_is_blamed():
    assert error_kind("NO 5, JALAN SS2/1", "NO 5,JALAN SS2/1", None) == "other"
    assert error_kind("A", "B", None) == "other"
    # case-folded only when scored so (the source comes normalised as the values are)
    assert error_kind("kedai buku", "KEDAI BUKU TA", "kedai buku ta", case_insensitive=True) == "boundary"
    assert error_kind("kedai buku", "KEDAI BUKU TA", "KEDAI BUKU TA") == "other"


def test_error_kinds_counts_by_field_and_record():
    golds = [
        {"company": "KEDAI BUKU TA", "total": "RM 9.00", "info": {"date": "01/02/2018"}},
        {"company": "KEDAI BUKU TA", "total": "RM 9.00", "info": {"date": "01/02/2018"}},
        {"company": "KEDAI BUKU TA", "total": "RM 9.00", "info": {"date": None}},
    ]
    preds = [
        {"company": "KEDAI BUKU TA", "total": "9.00", "info": {"date": "01/02/2019"}},
        None,  # not one JSON object
        {"company": "KEDAI  BUKU\nTA", "total": "RM 9.00", "info": {"date": "01/02/2018"}},
    ]
    correct = {name: column["correct"] for name, column in score_records(preds, golds)["fields"].items()}
    errors = error_kinds(preds, golds, [SOURCE] * 3, correct)
    assert errors["kinds"] == list(KINDS)
    assert errors["records"] == [
        {"total": "boundary", "info.date": "other"},
        {"company": "invalid", "total": "invalid", "info.date": "invalid"},
        {"info.date": "hallucinated"},  # the company differs in whitespace only: right
    ]
    assert errors["counts"] == {"invalid": 3, "omitted": 0, "hallucinated": 1, "gold_not_in_source": 0, "boundary": 1, "other": 1}
    assert errors["per_field"]["info.date"] == {"invalid": 1, "omitted": 0, "hallucinated": 1, "gold_not_in_source": 0, "boundary": 0, "other": 1}
    # every wrong field has exactly one kind
    wrong = sum(v == 0 for column in correct.values() for v in column)
    assert sum(errors["counts"].values()) == wrong == 6


def test_evaluate_reports_kinds_against_each_records_source(tmp_path):
    def record(answer: dict, source: str) -> str:
        messages = [{"role": "user", "content": f"Extract the total.\n{source}"}, {"role": "assistant", "content": json.dumps(answer)}]
        return json.dumps({"messages": messages, "source": source})

    dataset = tmp_path / "data.jsonl"
    dataset.write_text(record({"total": "RM 9.00"}, "TOTAL RM 9.00") + "\n" + record({"total": "RM 4.50"}, "TOTAL RM4.50") + "\n")
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"line": i, "output": json.dumps({"total": t})}) + "\n" for i, t in ((1, "9.00"), (2, "RM4.50"))))
    report = evaluate_files(preds, dataset)
    # line 2's gold is spaced unlike its own document (the record's "source" field)
    assert report["errors"]["records"] == [{"total": "boundary"}, {"total": "gold_not_in_source"}]
    assert report["errors"]["per_field"]["total"]["gold_not_in_source"] == 1


def test_the_document_of_a_picture_is_the_picture_not_the_prompt():
    prompt = [{"type": "image", "image": "r.png"}, {"type": "text", "text": "Extract the total."}]
    picture = Sample([{"role": "user", "content": prompt}])
    assert picture.source_text() == "Extract the total." and picture.document_text() is None
    assert Sample([{"role": "user", "content": prompt}], meta={"source": "TOTAL 9.00"}).document_text() == "TOTAL 9.00"
    text = Sample([{"role": "user", "content": "TOTAL 9.00"}])
    assert text.document_text() == text.source_text() == "TOTAL 9.00"
