"""``model-garden review``: the HTML review page, driven in a real headless Chromium
(npm's @sparticuz/chromium, found by conftest's ``chromium`` fixture) through playwright.

Run: ``.venv/bin/python -m pytest tests/test_review.py -q``
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.data.sample import DataError
from model_garden.evaluation.review import write_review

SCRIPT_VALUE = "</script><b>bold</b>"  # must show as text and leave the page's script working
# line: (source text, gold, predicted output, confidence, spans)
RECORDS = {
    1: ("ABC SDN BHD\nDATE 01/02/2018\nTOTAL 12.50",
        {"company": "ABC SDN BHD", "date": "01/02/2018", "total": "12.50"},
        '{"company": "ABC SDN BHD", "date": "01/02/2018", "total": "12.50"}',
        {"/company": 0.97, "/date": 0.9, "/total": 0.88},
        {"/company": [0, 11], "/date": [17, 27], "/total": [34, 39]}),
    2: ("XYZ TRADING\n03/04/2019\nTOTAL 8.00",
        {"company": "XYZ TRADING", "date": "03/04/2019", "total": "8.00"},
        '{"company": "XYZ TRADNG", "date": "03/04/2019", "total": "8.00"}',
        {"/company": 0.3, "/date": 0.95, "/total": 0.6},
        {"/date": [12, 22], "/total": [29, 33]}),
    3: ("GARBAGE IN", {"company": "GARBAGE IN", "date": None, "total": "1.00"}, "not json at all", {}, {}),
    4: ("NO CONFIDENCES", {"company": SCRIPT_VALUE, "date": "05/06/2020", "total": "3.00"},
        json.dumps({"company": SCRIPT_VALUE, "date": "05/06/2020", "total": "3.00"}), {}, {}),
    5: ("SHOP 5\n01/02/2019 TOTAL 7.00",
        {"company": "SHOP 5", "date": "01/02/2019", "total": "7.00"},
        '{"company": "SHOP 5", "date": "01/02/2018", "total": "7.00"}',
        {"/company": 0.99, "/date": 0.5, "/total": 0.8},
        {"/company": [0, 6], "/total": [24, 28]}),
}


def _chat(source: str, gold: dict) -> dict:
    return {"messages": [{"role": "user", "content": f"Extract the fields.\n{source}"},
                         {"role": "assistant", "content": json.dumps(gold)}]}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def receipts(tmp_path) -> tuple[Path, Path]:
    """A text dataset with a ``source`` key on each record, and predictions for it."""
    dataset = _write_jsonl(tmp_path / "receipts.jsonl", [
        {**_chat(source, gold), "source": source, **({"id": "r5"} if line == 5 else {})}
        for line, (source, gold, *_) in RECORDS.items()
    ])
    preds = _write_jsonl(tmp_path / "preds.jsonl", [
        {"line": line, "output": output, "constrained": True, "grounded": bool(spans), "new_tokens": 20,
         **({"spans": spans} if spans else {}), **({"confidence": conf} if conf else {})}
        for line, (_, _, output, conf, spans) in RECORDS.items()
    ])
    return preds, dataset


@pytest.fixture(scope="module")
def browser(chromium) -> Browser:
    path, args = chromium
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=args)
        yield browser
        browser.close()


def _visible(page: Page, selector: str, attribute: str) -> list[str]:
    return [el.get_attribute(attribute) for el in page.locator(selector).all() if el.is_visible()]


def test_page_sorts_by_confidence_and_filters(receipts, tmp_path, browser):
    preds, dataset = receipts
    out = tmp_path / "review.html"
    summary = write_review(preds, dataset, out)
    assert summary == {"out": str(out), "records": 5, "fields": 15, "wrong": 5, "images": 0}
    html = out.read_text(encoding="utf-8")
    assert "<script src" not in html and "<link" not in html and SCRIPT_VALUE not in html

    page = browser.new_page()
    page.goto(out.as_uri())
    # Invalid output first, then the lowest confidence, records without confidences last.
    assert _visible(page, "section.record", "data-line") == ["3", "2", "5", "1", "4"]
    assert page.locator("section.record h2").first.inner_text() == "line 3 · invalid output"
    assert page.locator("section.record").nth(1).locator("h2").inner_text() == "line 2 · lowest confidence 0.30"
    assert page.locator("#line-5 h2").inner_text() == "line 5 · id r5 · lowest confidence 0.50"

    company = page.locator('#line-2 tr[data-pointer="/company"]')
    assert company.get_attribute("data-correct") == "false" and company.get_attribute("data-confidence") == "0.30"
    assert company.locator("del").inner_text() == "I" and company.locator("ins").count() == 0
    assert company.locator("td").nth(4).inner_text() == "wrong: other"  # a misread
    assert page.locator('#line-3 tr[data-pointer="/total"] td').nth(4).inner_text() == "wrong: invalid"
    assert page.locator('#line-4 tr[data-pointer="/company"] td').nth(1).inner_text() == SCRIPT_VALUE
    assert page.locator("#line-4 b").count() == 0
    marks = page.locator("#line-1 pre.source mark")
    assert [(m.inner_text(), m.get_attribute("title")) for m in marks.all()] == [
        ("ABC SDN BHD", "/company"), ("01/02/2018", "/date"), ("12.50", "/total")
    ]

    page.check("#filter-wrong")
    wrong = [(row.evaluate("r => r.closest('section').dataset.line"), row.get_attribute("data-pointer"))
             for row in page.locator("tr.field").all() if row.is_visible()]
    assert wrong == [("3", "/company"), ("3", "/date"), ("3", "/total"), ("2", "/company"), ("5", "/date")]
    assert _visible(page, "section.record", "data-line") == ["3", "2", "5"]
    assert page.inner_text("#shown") == "3"

    page.uncheck("#filter-wrong")
    page.fill("#filter-threshold", "0.7")
    assert _visible(page, "tr.field", "data-confidence") == ["0.30", "0.60", "0.50"]
    assert _visible(page, "section.record", "data-line") == ["2", "5"]

    page.fill("#filter-threshold", "")
    page.select_option("#filter-field", "total")
    assert _visible(page, "tr.field", "data-pointer") == ["/total"] * 5
    assert _visible(page, "section.record", "data-line") == ["3", "2", "5", "1", "4"]
    page.check("#filter-wrong")
    assert _visible(page, "section.record", "data-line") == ["3"]

    page.uncheck("#filter-wrong")
    page.select_option("#filter-field", "")
    assert len(_visible(page, "tr.field", "data-pointer")) == 15
    # one kind of wrong: only the kinds that occur are offered
    assert [o.get_attribute("value") for o in page.locator("#filter-kind option").all()] == ["", "invalid", "other"]
    page.select_option("#filter-kind", "other")
    other = [(row.evaluate("r => r.closest('section').dataset.line"), row.get_attribute("data-pointer"))
             for row in page.locator("tr.field").all() if row.is_visible()]
    assert other == [("2", "/company"), ("5", "/date")] and page.inner_text("#shown") == "2"
    page.select_option("#filter-kind", "")
    assert len(_visible(page, "tr.field", "data-pointer")) == 15
    assert page.locator("#filter-review").count() == 0  # no predict --review-at marks: no such filter
    page.close()


def test_the_fields_predict_marked_for_review_filter(receipts, tmp_path, browser):
    preds, dataset = receipts
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    marks = {2: ["/company", "/total"], 3: [""], 5: ["/date"]}  # "": the whole reply (not one JSON object)
    _write_jsonl(preds, [row | {"needs_review": marks.get(row["line"], [])} for row in rows])
    (tmp_path / "preds.jsonl.meta.json").write_text(json.dumps({"review_at": {"precision": 0.95, "threshold": 0.9}}))
    out = tmp_path / "review.html"
    assert write_review(preds, dataset, out)["to_review"] == 6

    page = browser.new_page()
    page.goto(out.as_uri())
    assert page.locator('label:has(#filter-review)').inner_text().strip() == "to review only (6 fields at 95% precision)"
    page.check("#filter-review")
    marked = [(row.evaluate("r => r.closest('section').dataset.line"), row.get_attribute("data-pointer"))
              for row in page.locator("tr.field").all() if row.is_visible()]
    assert marked == [("3", "/company"), ("3", "/date"), ("3", "/total"), ("2", "/company"), ("2", "/total"), ("5", "/date")]
    assert page.inner_text("#shown") == "3"
    page.check("#filter-wrong")  # filters combine: marked and wrong
    assert _visible(page, "section.record", "data-line") == ["3", "2", "5"]
    assert _visible(page, "tr.field", "data-pointer") == ["/company", "/date", "/total", "/company", "/date"]
    page.close()


def test_images_are_embedded_downscaled(tmp_path, browser):
    Image.new("RGB", (1500, 300), (200, 30, 30)).save(tmp_path / "receipt.png")
    dataset = _write_jsonl(tmp_path / "forms.jsonl", [{"messages": [
        {"role": "user", "content": [{"type": "image", "image": "receipt.png"}, {"type": "text", "text": "Extract the total."}]},
        {"role": "assistant", "content": '{"total": "9.00"}'},
    ]}])
    preds = _write_jsonl(tmp_path / "preds.jsonl", [{"line": 1, "output": '{"total": "9.50"}', "confidence": {"/total": 0.4}}])
    out = tmp_path / "review.html"
    assert write_review(preds, dataset, out)["images"] == 1

    page = browser.new_page()
    page.goto(out.as_uri())
    image = page.locator('#line-1 img[src^="data:image/jpeg;base64,"]')
    assert image.count() == 1
    image.evaluate("img => img.decode()")  # fails unless the browser can decode the embedded bytes
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1000, 200]
    # the prompt's text is no document: the gold is not blamed for being absent from it
    assert page.locator('#line-1 tr[data-pointer="/total"] td').nth(4).inner_text() == "wrong: other"
    page.close()


def test_list_items_are_rows_and_the_source_field_comes_from_meta(tmp_path):
    gold = {"items": ["tea", "cake"], "total": "9.00"}
    dataset = _write_jsonl(tmp_path / "d.jsonl", [{**_chat("see the OCR", gold), "ocr": "tea cake TOTAL 9.00", "source": "not this"}])
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"line": 1, "output": '{"items": ["tea", "cakes"], "total": "9.00"}',
                                                 "spans": {"/items/0": [0, 3], "/total": [15, 19]}}])
    (tmp_path / "p.jsonl.meta.json").write_text(json.dumps({"source_field": "ocr"}), encoding="utf-8")
    html = Path(write_review(preds, dataset, tmp_path / "r.html")["out"]).read_text(encoding="utf-8")
    rows = re.findall(r'data-pointer="([^"]*)" data-field="([^"]*)" data-correct="([^"]*)" data-confidence=""', html)
    assert rows == [("/items/0", "items", "true"), ("/items/1", "items", "false"), ("/total", "total", "true")]
    assert '<option value="items">items</option><option value="total">total</option>' in html
    assert '<pre class="source"><mark title="/items/0">tea</mark> cake TOTAL <mark title="/total">9.00</mark></pre>' in html
    assert "cake<ins>s</ins>" in html and "wrong: boundary" in html  # one contains the other


def test_cli_writes_the_page(receipts, tmp_path):
    preds, dataset = receipts
    result = CliRunner().invoke(app, ["review", "--predictions", str(preds), "--dataset", str(dataset)])
    out = preds.with_suffix(".review.html")
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()) == f"wrote {out}: 5 records, 15 fields (5 wrong), 0 images embedded"
    assert out.read_text(encoding="utf-8").count('<section class="record"') == 5


@pytest.mark.parametrize("line, message", [
    ('{"line": 99, "output": "{}", "needs_review": "/company"}\n', r"preds.jsonl:6: 'needs_review' must be a list of JSON Pointers"),
    ("not json\n", r"preds.jsonl:6: not a JSON line"),
    ('{"output": "{}"}\n', r'preds.jsonl:6: expected \{"line": <int >= 0>, "output": <string>, ...\}'),
    ('{"line": 99, "output": "{}"}\n', r"preds.jsonl:6: predicts dataset line 99, but .*receipts.jsonl has no record on line 99"),
    ('{"line": 1, "output": "{}"}\n', r"preds.jsonl:6: a second prediction for line 1 \(first: .*preds.jsonl:1\)"),
], ids=["needs_review not a list", "not JSON", "no line", "line not in the dataset", "line predicted twice"])
def test_bad_predictions_are_named(receipts, tmp_path, line, message):
    preds, dataset = receipts
    with preds.open("a", encoding="utf-8") as fh:
        fh.write(line)
    with pytest.raises(DataError, match=message):
        write_review(preds, dataset, tmp_path / "review.html")
    assert not (tmp_path / "review.html").exists()


def test_cli_bad_input_is_one_line(receipts, tmp_path):
    _, dataset = receipts
    preds = _write_jsonl(tmp_path / "bad.jsonl", [{"line": 1, "output": "{}", "spans": {"/company": [0, 500]}}])
    result = CliRunner().invoke(app, ["review", "--predictions", str(preds), "--dataset", str(dataset), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()) == (
        f"error: {preds}:1: span [0, 500] of /company is not [start, end] within the source text (39 characters)"
    )


def test_a_filled_confidence_score_is_not_a_judged_field(tmp_path):
    gold = {"Marque": {"contents": "PEUGEOT", "confidence_score": None}}
    dataset = _write_jsonl(tmp_path / "d.jsonl", [{**_chat("Marque: PEUGEOT", gold), "source": "Marque: PEUGEOT"}])
    output = json.dumps({"Marque": {"contents": "PEUGEOT", "confidence_score": 0.93}})
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"line": 1, "output": output, "confidence": {"/Marque/contents": 0.93}}])
    html = Path(write_review(preds, dataset, tmp_path / "r.html")["out"]).read_text(encoding="utf-8")
    assert re.findall(r'data-pointer="([^"]*)" data-field="[^"]*" data-correct="([^"]*)"', html) == [("/Marque/contents", "true")]
