"""SROIE conversion, on the real receipts in ../shared and on a deliberately broken copy.

Run: ``.venv/bin/python -m pytest tests/test_data_sroie.py -q``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from PIL import Image
from typer.testing import CliRunner

from model_garden import jsonfmt
from model_garden.cli import app
from model_garden.data.images import load_image
from model_garden.data.schema import find_embedded_schema, schema_for
from model_garden.data.sroie import DECODER_SCHEMA, SCHEMA, Box, convert_sroie, reading_order
from model_garden.masking.scan import validate_dataset


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _document(record: dict) -> list[str]:
    return record["messages"][1]["content"].split("reading order):\n", 1)[1].split("\n")


@pytest.fixture(scope="module")
def real(shared_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sroie")
    return shared_dir / "data" / "sroie", out, convert_sroie(shared_dir / "data" / "sroie", out)


def test_real_counts_and_order(real):
    _, out, result = real
    assert {p.name: n for p, n in result.files.items()} == {
        "all.jsonl": 500, "train.jsonl": 400, "test.jsonl": 100, "vision.jsonl": 24, "schema.json": 1
    }
    ids = [r["id"] for r in _lines(out / "all.jsonl")]
    assert ids == sorted(ids) and len(set(ids)) == 500 and ids[0] == "000"
    assert [r["id"] for r in _lines(out / "train.jsonl")] + [r["id"] for r in _lines(out / "test.jsonl")] == ids
    assert [r["id"] for r in _lines(out / "vision.jsonl")] == [f"{i:03d}" for i in range(24)]
    assert result.skipped == []
    # The OCR text is each text record's source (what --grounded copies from), not the prompt's schema.
    first = _lines(out / "all.jsonl")[0]
    assert first["source"].split("\n") == _document(first) and "schema" not in first["source"]


def test_a_calibration_split_is_held_out_of_training(shared_dir, tmp_path):
    result = convert_sroie(shared_dir / "data" / "sroie", tmp_path, n_train=400, n_calib=50)
    assert {p.name: n for p, n in result.files.items() if p.suffix == ".jsonl"} == {
        "all.jsonl": 500, "train.jsonl": 350, "calib.jsonl": 50, "test.jsonl": 100, "vision.jsonl": 24
    }
    assert [r["id"] for r in _lines(tmp_path / "calib.jsonl")] == [f"{i:03d}" for i in range(350, 400)]
    assert _lines(tmp_path / "test.jsonl")[0]["id"] == "400"


def test_first_reply_is_its_key_file(real):
    src, out, _ = real
    first = _lines(out / "all.jsonl")[0]
    gold = json.loads((src / "key" / "000.json").read_text(encoding="utf-8"))
    assert first["messages"][2]["content"] == jsonfmt.dumps(gold)
    assert json.loads(first["messages"][2]["content"]) == gold


def test_reading_order_on_real_receipts(real):
    _, out, _ = real
    records = {r["id"]: r for r in _lines(out / "all.jsonl")}
    assert _document(records["000"])[:4] == [
        "TAN WOON YANN",
        "BOOK TA .K(TAMAN DAYA) SDN BND",  # the OCR's own misreading of BHD, kept
        "789417-W",
        "NO.53 55,57 & 59, JALAN SAGU 18,",  # commas inside the text survive
    ]
    doc = _document(records["033"])
    assert "$7.10 1 $7.10" in doc  # price, quantity and amount boxes joined on one row, left to right
    assert doc.index("ITEM QTY TOTAL") < doc.index("$7.10 1 $7.10") < doc.index("TOTAL AMOUNT: $8.20")


def test_real_problems_are_reported(real):
    src, out, result = real
    assert result.problems == [
        f"{src / 'key' / '033.json'}: 'total' is ''; answered null",
        f"{src / 'key' / '104.json'}: no 'address'; answered null",
    ]
    records = {r["id"]: json.loads(r["messages"][2]["content"]) for r in _lines(out / "all.jsonl")}
    assert records["104"]["address"] is None and records["033"]["total"] is None


def test_every_reply_follows_the_schema(real):
    _, out, _ = real
    schema = json.loads((out / "schema.json").read_text(encoding="utf-8"))
    assert schema == DECODER_SCHEMA  # the decoder's schema: the date pattern on
    validator, outside = Draft202012Validator(schema), {}
    for record in _lines(out / "all.jsonl"):
        answer = json.loads(record["messages"][2]["content"])
        assert list(answer) == ["company", "date", "address", "total"]
        assert not list(Draft202012Validator(SCHEMA).iter_errors(answer)), record["id"]
        outside |= {record["id"]: e.instance for e in validator.iter_errors(answer)}
        # The prompt keeps the schema models were trained with.
        assert find_embedded_schema(record["messages"][1]["content"]) == SCHEMA
    # The date pattern was written from the training receipts' golds; one test receipt's
    # date has a shape none of them has (docs/results/trust.md).
    assert outside == {"414": "OCT 3, 2016"}
    assert schema_for(out / "train.jsonl") == DECODER_SCHEMA


@pytest.mark.parametrize(
    ("date", "allowed"),
    [("28/02/2016", True), ("06-04-16", True), ("12 MAR 2018", True), ("20180312", True), ("(27/03/2018)", True),
     ("11:05", False),  # the time beside the date: a span of the receipt, not of date shape
     ("0042", False)],  # a till number
)
def test_the_date_pattern_keeps_grounded_dates_to_date_shaped_spans(smollm2_tokenizer, date, allowed):
    from model_garden.grammar import grammar_allows
    from model_garden.inference.grounding import grounded_grammar

    source = "TILL 0042\nDATE: 28/02/2016 11:05 06-04-16\n12 MAR 2018 20180312 (27/03/2018)\nTOTAL 110.00"
    reply = jsonfmt.dumps({"company": None, "date": date, "address": None, "total": "110.00"})
    assert grammar_allows(smollm2_tokenizer, grounded_grammar(DECODER_SCHEMA, source), reply) is allowed
    assert grammar_allows(smollm2_tokenizer, grounded_grammar(SCHEMA, source), reply)  # without it, any span


def test_vision_file_holds_the_jpegs(real):
    src, out, _ = real
    first = _lines(out / "vision.jsonl")[0]
    text, image = first["messages"][1]["content"]
    assert "reading order" not in text["text"] and image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert load_image(image["image_url"]["url"]).size == Image.open(src / "img" / "000.jpg").size
    report = validate_dataset(out / "vision.jsonl")
    assert report.ok and report.images == 24 and report.image_sizes()["max"] == (2481, 3508)


def test_rows_group_boxes_by_vertical_centre():
    boxes = [
        Box(300, 52, 360, 66, "$7.10"),  # same row as the label, listed first
        Box(10, 50, 120, 68, "TOTAL:"),
        Box(10, 80, 200, 98, "THANK YOU"),
        Box(10, 20, 200, 40, "SHOP"),
    ]
    assert reading_order(boxes) == ["SHOP", "TOTAL: $7.10", "THANK YOU"]
    assert reading_order([]) == []


@pytest.fixture
def broken(tmp_path) -> Path:
    src = tmp_path / "src"
    for sub in ("box", "key", "img"):
        (src / sub).mkdir(parents=True)
    key = {"company": "CAFÉ SDN BHD", "date": "01/02/2018", "address": "1, JALAN A", "total": "3.00"}
    (src / "box" / "001.csv").write_bytes(
        b"10,10,90,10,90,20,10,20,CAF\xc9 SDN BHD\r\n"  # Latin-1, CRLF
        b"10,30,90,30,90,40,10,40\r\n"  # no text field
        b"a,30,90,30,90,40,10,40,BAD CORNER\r\n"
        b"10,50,90,50,90,60,10,60,   \r\n"
        b"\r\n"
        b"10,70,90,70,90,80,10,80,1, JALAN A\r\n"
    )
    (src / "key" / "001.json").write_text(json.dumps(key), encoding="utf-8")
    (src / "img" / "001.jpg").write_bytes(b"not a jpeg")
    (src / "box" / "002.csv").write_text("1,1,2,1,2,2,1,2,ONLY BOX\n", encoding="utf-8")
    (src / "key" / "002.json").write_text("{not json", encoding="utf-8")
    (src / "box" / "003.csv").write_text("1,1,2,1,2,2,1,2,NO KEY\n", encoding="utf-8")
    (src / "box" / "004.csv").write_text("short line\n", encoding="utf-8")
    (src / "key" / "004.json").write_text(json.dumps(key), encoding="utf-8")
    return src


def test_broken_source_is_reported_not_fatal(broken, tmp_path):
    result = convert_sroie(broken, tmp_path / "out", n_train=5)
    problems = "\n".join(result.problems)
    for expected in (
        "001.csv: not UTF-8 (byte 0xc9",
        "001.csv:2: 8 comma-separated field(s), 9 expected",
        "001.csv:3: coordinates are not numbers",
        "001.csv:4: empty text",
        "001.jpg: unreadable image",
        "002.json: not JSON",
        "003.json: missing; receipt 003 skipped",
        "004.csv:1: 1 comma-separated field(s)",
        "004.csv: no usable OCR line",
        "--n-train 5 is more than the 1 usable receipts",
    ):
        assert expected in problems, expected
    assert result.skipped == ["002", "003", "004"]
    (record,) = _lines(tmp_path / "out" / "all.jsonl")
    assert _document(record) == ["CAFÉ SDN BHD", "1, JALAN A"]
    assert (tmp_path / "out" / "vision.jsonl").read_text() == ""


def test_bad_arguments(broken, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a SROIE folder"):
        convert_sroie(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="--n-train"):
        convert_sroie(broken, tmp_path / "out", n_train=-1)
    with pytest.raises(ValueError, match="--n-calib between 0 and --n-train"):
        convert_sroie(broken, tmp_path / "out", n_train=2, n_calib=3)


def test_cli(broken, tmp_path):
    result = CliRunner().invoke(app, ["make-data", "sroie", "--src", str(broken), "--out", str(tmp_path / "o"), "--n-train", "1"])
    assert result.exit_code == 0, result.output
    assert "problem(s) in the source" in result.output and "3 receipt(s) skipped" in result.output


def test_grounded_grammar_accepts_the_gold_replies_that_are_spans_of_the_ocr(real, smollm2_tokenizer):
    """On the 100 test receipts, 93 gold replies are spans of their OCR text (whitespace
    runs read as one space) and pass their grounded grammar; the 7 others are addresses
    the annotators re-punctuated ("27, JALAN" for the OCR's "27,JALAN"), which no
    grounded decoding can write."""
    from model_garden.grammar import grammar_allows
    from model_garden.inference.grounding import grounded_grammar, normalized_source

    _, out, _ = real
    passed, missed = 0, []
    for record in _lines(out / "test.jsonl"):
        reply = record["messages"][2]["content"]
        if grammar_allows(smollm2_tokenizer, grounded_grammar(SCHEMA, record["source"]), reply):
            passed += 1
        else:
            text, _ = normalized_source(record["source"])
            missed += [k for k, v in json.loads(reply).items() if v and " ".join(v.split()) not in text]
    assert passed == 93 and missed == ["address"] * 7
