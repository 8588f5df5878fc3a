"""Extraction metrics, Donut-compatible F1 / nTED, and ``model-garden evaluate``.

Run: ``python -m pytest tests/test_evaluation.py -q``
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.cli.common import BUNDLED_EXAMPLE
from model_garden.data.jsonl import DataError, iter_records
from model_garden.evaluation import evaluate_files, extraction_metrics
from model_garden.evaluation.donut import donut_normalize, flatten, pair_counts, ted_accuracy, tree_distance
from model_garden.evaluation.metrics import normalize, pooled, record_ratios, score_records
from model_garden.evaluation.report import parse_output

# ---------------------------------------------------------------- field metrics


def test_normalize_is_light():
    assert normalize("  Jean \n\t Dupont ") == "Jean Dupont"
    assert normalize("PaRis", case_insensitive=True) == "paris"
    assert normalize(208) == normalize("208") == "208"
    assert normalize(True) == "true"
    assert normalize(["a ", None, "  ", "b"]) == '["a", "b"]'
    for empty in (None, "", "   ", [], {}, [None, " "], {"contents": None}):
        assert normalize(empty) == ""


GOLD = {"name": "Jean Dupont", "city": "Paris", "zip": "75001", "note": None}
PRED = {"name": "Jean  Dupond", "city": "paris", "zip": 75001, "note": "n/a"}


def test_field_metrics_hand_checked():
    m = extraction_metrics([PRED], [GOLD])
    # name: "Jean Dupond" vs "Jean Dupont" (after collapsing spaces): 1 edit, gold 11 chars
    #   -> wrong, CER 1/11, ANLS 1 - 1/11 = 10/11
    # city: "paris" vs "Paris": 1 edit of 5 -> wrong, CER 0.2, ANLS 0.8
    # zip: 75001 vs "75001" -> same text: right, CER 0, ANLS 1
    # note: gold empty, "n/a" predicted -> wrong, CER 1 (empty-gold rule), ANLS 0, a hallucination
    assert m["n"] == 1 and m["fields"] == 4
    assert m["field_accuracy"] == pytest.approx(1 / 4)
    assert m["field_accuracy_filled"] == pytest.approx(1 / 3)  # name, city, zip: zip right
    assert m["cer"] == pytest.approx((1 / 11 + 0.2 + 0 + 1) / 4)
    assert m["anls"] == pytest.approx((10 / 11 + 0.8 + 1 + 0) / 4)
    assert (m["hallucinations"], m["gold_empty"], m["hallucination_rate"]) == (1, 1, 1.0)
    assert (m["omissions"], m["gold_filled"], m["omission_rate"]) == (0, 3, 0.0)
    assert m["per_field"]["name"] == {
        "accuracy": 0.0,
        "accuracy_filled": 0.0,
        "cer": pytest.approx(1 / 11),
        "anls": pytest.approx(10 / 11),
        "hallucination_rate": None,  # the gold is never empty there
        "omission_rate": 0.0,
        "n": 1,
    }
    assert m["per_field"]["note"]["hallucination_rate"] == 1.0
    assert m["per_field"]["note"]["accuracy_filled"] is None  # its gold is never filled
    assert m["json_valid"] == 1.0 and m["schema_valid"] is None


def test_case_insensitive_option():
    m = extraction_metrics([PRED], [GOLD], case_insensitive=True)
    # city now matches: right, CER 0, ANLS 1; the other fields as above
    assert m["field_accuracy"] == pytest.approx(2 / 4)
    assert m["cer"] == pytest.approx((1 / 11 + 0 + 0 + 1) / 4)
    assert m["anls"] == pytest.approx((10 / 11 + 1 + 1 + 0) / 4)
    # Donut's pair F1 stays case-sensitive, as Donut computes it
    assert m["f1"] == extraction_metrics([PRED], [GOLD])["f1"]


def test_anls_threshold_and_cer_above_one():
    m = extraction_metrics([{"a": "abxy", "b": "abcdefgh"}], [{"a": "abcd", "b": "ab"}])
    # a: 2 edits / max length 4 = 0.5, not below the 0.5 threshold -> ANLS 0; CER 2/4
    # b: 6 insertions on a 2-char gold -> CER 3.0 (not clipped); ANLS 0 (6/8 >= 0.5)
    assert m["per_field"]["a"]["anls"] == 0.0 and m["per_field"]["a"]["cer"] == 0.5
    assert m["per_field"]["b"]["cer"] == 3.0 and m["anls"] == 0.0
    # 1 edit / 4 = 0.25 < 0.5 -> ANLS 0.75
    assert extraction_metrics([{"a": "abcx"}], [{"a": "abcd"}])["anls"] == 0.75


def test_an_invalid_output_scores_zero_on_every_field():
    schema = {"type": "object", "required": ["a"]}
    m = extraction_metrics([None], [{"a": "x", "b": None, "c": ["y"]}], schema=schema)
    # a and c omitted; b (gold empty) is wrong too: an invalid output answered nothing
    assert m["json_valid"] == 0.0 and m["schema_valid"] == 0.0
    assert m["field_accuracy"] == 0.0 and m["field_accuracy_filled"] == 0.0
    assert (m["omissions"], m["gold_filled"], m["hallucinations"], m["gold_empty"]) == (2, 2, 0, 1)
    assert m["cer"] == 1.0 and m["anls"] == 0.0
    assert m["per_field"]["b"] == {
        "accuracy": 0.0, "accuracy_filled": None, "cer": 1.0, "anls": 0.0, "hallucination_rate": 0.0, "omission_rate": None, "n": 1,
    }
    assert (m["precision"], m["recall"], m["f1"], m["ted_accuracy"]) == (0.0, 0.0, 0.0, 0.0)
    # The case: all-null golds. Invalid outputs used to get every null right
    # (and nTED 1.0, the gold tree being empty); a valid all-null answer still does.
    golds = [{"a": "x", "b": None, "c": None}, {"a": None, "b": None, "c": None}]
    invalid = extraction_metrics([None, None], golds)
    assert (invalid["field_accuracy"], invalid["ted_accuracy"], invalid["anls"]) == (0.0, 0.0, 0.0)
    valid = extraction_metrics([{"a": None, "b": None, "c": None}] * 2, golds)
    assert valid["field_accuracy"] == pytest.approx(5 / 6) and valid["field_accuracy_filled"] == 0.0
    assert valid["ted_accuracy"] == 0.5  # record 1 misses its only pair, record 2 is exact


NESTED_GOLD = {
    "Marque": {"contents": "PEUGEOT", "confidence_score": None},
    "Modèle": {"contents": "208", "confidence_score": None},
}


def test_nested_answers_use_dotted_keys():
    pred = {"Marque": {"contents": "Peugeot", "confidence_score": 0.93}, "Modèle": "208"}
    m = extraction_metrics([pred], [NESTED_GOLD])
    # A confidence_score beside contents is the model's confidence (predict fills it), not a field.
    assert list(m["per_field"]) == ["Marque.contents", "Modèle.contents"]
    # Marque.contents: wrong case; Modèle.contents: a bare string has no .contents -> omitted
    assert m["field_accuracy"] == 0.0 and (m["omissions"], m["gold_filled"]) == (1, 2)
    assert extraction_metrics([pred], [NESTED_GOLD], case_insensitive=True)["per_field"]["Marque.contents"]["accuracy"] == 1.0


def test_metrics_are_pooled_record_ratios():
    """compare's bootstrap resamples records with the metrics' own definitions: each
    pooled metric is sum(numerator) / sum(denominator) of its per-record ratios."""
    golds = [GOLD, GOLD, GOLD, {"name": "A", "city": None, "zip": None, "note": "x"}]
    preds = [PRED, None, {"name": "Jean Dupont", "note": "n/a"}, {"name": "A"}]
    schema = {"type": "object", "required": ["name"]}
    m = extraction_metrics(preds, golds, schema=schema)
    ratios = record_ratios(score_records(preds, golds, schema=schema))
    assert set(ratios) == {k for k in m if isinstance(m[k], float)} - {"precision", "recall"}
    for key, (num, den) in ratios.items():
        assert num.shape == den.shape == (4,)
        assert pooled(num, den) == pytest.approx(m[key]), key
    # right fields per record: zip; none (invalid); name; name and the two nulls
    assert list(ratios["field_accuracy"][0]) == [1, 0, 1, 3] and list(ratios["field_accuracy"][1]) == [4, 4, 4, 4]


def test_lists_are_compared_whole():
    gold = {"tags": ["a", "b"]}
    assert extraction_metrics([{"tags": [" a", "b "]}], [gold])["field_accuracy"] == 1.0
    assert extraction_metrics([{"tags": ["b", "a"]}], [gold])["field_accuracy"] == 0.0
    assert extraction_metrics([{"tags": []}], [gold])["omissions"] == 1


def test_rates_and_counts_over_examples():
    golds = [{"a": "1", "b": None}, {"a": None, "b": None}, {"a": "3", "b": "4"}]
    preds = [{"a": "1", "b": "x"}, {"a": "", "b": None}, {"a": None, "b": "4"}]
    m = extraction_metrics(preds, golds)
    # gold-empty fields: ex0.b (hallucinated), ex1.a, ex1.b -> 1 of 3
    # gold-filled fields: ex0.a, ex2.a (omitted), ex2.b -> 1 of 3
    assert (m["hallucinations"], m["gold_empty"]) == (1, 3) and m["hallucination_rate"] == pytest.approx(1 / 3)
    assert (m["omissions"], m["gold_filled"]) == (1, 3) and m["omission_rate"] == pytest.approx(1 / 3)
    assert m["per_field"]["b"]["hallucination_rate"] == 0.5  # ex0.b, ex1.b
    assert m["per_field"]["a"]["omission_rate"] == 0.5  # ex0.a, ex2.a
    assert m["field_accuracy"] == pytest.approx(4 / 6)


def test_schema_validity():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    preds = [{"a": "x"}, {"a": 1}, None]
    golds = [{"a": "x"}] * 3
    m = extraction_metrics(preds, golds, schema=schema)
    assert m["schema_valid"] == pytest.approx(1 / 3) and m["schema_checked"] == 3
    per_record = extraction_metrics(preds, golds, schema=[schema, None, schema])
    assert per_record["schema_valid"] == 0.5 and per_record["schema_checked"] == 2
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        extraction_metrics(preds, golds, schema={"type": "nonsense"})


def test_bad_arguments():
    with pytest.raises(ValueError, match="2 predictions for 1 gold"):
        extraction_metrics([{}, {}], [{}])
    with pytest.raises(ValueError, match="gold 0 is a list"):
        extraction_metrics([{}], [[]])
    with pytest.raises(ValueError, match="no examples"):
        extraction_metrics([], [])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=4), json_values, max_size=4))
def test_a_perfect_prediction_scores_perfectly(gold):
    m = extraction_metrics([gold], [gold])
    assert m["field_accuracy"] in (1.0, None) and m["cer"] in (0.0, None) and m["anls"] in (1.0, None)
    assert (m["precision"], m["recall"], m["f1"], m["ted_accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    assert m["hallucination_rate"] in (0.0, None) and m["omission_rate"] in (0.0, None)


# ---------------------------------------------------------------- Donut compatibility


def test_donut_normalize_and_flatten():
    data = {"menu": [{"name": ["cake"], "count": ["2"]}, {"name": ["juice"], "count": ["1"]}]}
    # keys sorted by (length, key): "name" before "count"; lists flattened item by item
    assert flatten(donut_normalize(data)) == [
        ("menu.name", "cake"),
        ("menu.count", "2"),
        ("menu.name", "juice"),
        ("menu.count", "1"),
    ]
    # falsy values dropped (0 too, as Donut does), scalars stringified, list items stripped
    messy = {"zz": " x ", "a": None, "c": [1, None, " ", "y", True], "dd": {}, "e": 0, "f": 2.5}
    assert list(donut_normalize(messy).items()) == [("c", ["1", "y"]), ("f", ["2.5"]), ("zz", ["x"])]
    assert donut_normalize({"m": {"contents": "P", "confidence_score": None}}) == {"m": [{"contents": ["P"]}]}


def test_donut_f1_is_micro_over_pair_multisets():
    gold = {"menu": [{"nm": "cake", "cnt": "2"}, {"nm": "tea", "cnt": "1"}], "total": "3"}
    pred = {"menu": [{"nm": "cake", "cnt": 2}, {"nm": "tea", "cnt": "2"}], "total": "3", "tax": "0.1"}
    # gold pairs: nm cake, cnt 2, nm tea, cnt 1, total 3 (5)
    # pred pairs: nm cake, cnt 2, nm tea, cnt 2, total 3, tax 0.1 (6); the second "cnt 2"
    # has no gold left to match -> tp 4, fp 2, fn 1
    assert pair_counts(pred, gold) == (4, 2, 1)
    m = extraction_metrics([pred], [gold])
    assert (m["precision"], m["recall"]) == (pytest.approx(4 / 6), pytest.approx(4 / 5))
    assert m["f1"] == pytest.approx(4 / (4 + 3 / 2))  # Donut: tp / (tp + (fp + fn) / 2) = 8/11
    # a second example with a None prediction adds fn 1: micro F1 = 4 / (4 + 4/2) = 2/3
    assert extraction_metrics([pred, None], [gold, {"x": "1"}])["f1"] == pytest.approx(2 / 3)


def test_donut_ted_accuracy():
    gold = {"a": "xy", "b": "z"}
    # TED(empty, gold) = insert key a (1) + leaf "xy" (2) + key b (1) + leaf "z" (1) = 5
    assert tree_distance({}, gold) == 5
    assert ted_accuracy(gold, gold) == 1.0
    assert ted_accuracy(None, gold) == ted_accuracy({}, gold) == 0.0
    assert ted_accuracy({"a": "xy", "b": "w"}, gold) == pytest.approx(1 - 1 / 5)  # relabel leaf z -> w: 1
    assert ted_accuracy({"b": "z", "a": "xy"}, gold) == 1.0  # key order does not matter
    assert ted_accuracy({"a": "xy"}, gold) == pytest.approx(1 - 2 / 5)  # remove key b and leaf z
    assert ted_accuracy({"a": "xy", "c": "z"}, gold) == pytest.approx(1 - 1 / 5)  # relabel key b -> c
    # inserting key c and a 21-char leaf costs 22 > 5: the accuracy is clipped at 0
    assert ted_accuracy({"a": "xy", "b": "z", "c": "a long invented value"}, gold) == 0.0
    nested = {"menu": [{"nm": "cake"}, {"nm": "tea"}]}
    # TED(empty) = menu 1 + (<subtree> 1 + nm 1 + "cake" 4) + (<subtree> 1 + nm 1 + "tea" 3) = 12;
    # dropping the second item removes <subtree>, nm, "tea": 5
    assert ted_accuracy({"menu": [{"nm": "cake"}]}, nested) == pytest.approx(1 - 5 / 12)
    # empty gold (Donut divides by zero): 1 for an empty prediction, else 0
    assert ted_accuracy({}, {"a": None}) == 1.0 and ted_accuracy({"a": "1"}, {}) == 0.0


# ---------------------------------------------------------------- files and CLI

SCHEMA = {
    "type": "object",
    "properties": {"company": {"type": "string"}, "total": {"type": ["string", "null"]}},
    "required": ["company", "total"],
    "additionalProperties": False,
}


def _record(answer: dict) -> str:
    messages = [
        {"role": "user", "content": "Extract company and total."},
        {"role": "assistant", "content": json.dumps(answer)},
    ]
    return json.dumps({"messages": messages})


@pytest.fixture
def files(tmp_path):
    dataset = tmp_path / "data.jsonl"
    # line 2 is blank: predictions refer to file lines, not record indexes
    dataset.write_text(
        _record({"company": "ACME  SDN BHD", "total": "9.00"})
        + "\n\n"
        + _record({"company": "KEDAI", "total": None})
        + "\n"
        + _record({"company": "BOOK TA", "total": "4.50"})
        + "\n"
    )
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    preds = tmp_path / "preds.jsonl"
    lines = [
        {"line": 1, "output": ' {"company": "acme sdn bhd", "total": "9.00"}\n', "seconds": 0.5},
        {"line": 3, "output": '```json\n{"company": "KEDAI", "total": null}\n```'},
    ]
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return dataset, preds, schema


def test_evaluate_files(files):
    dataset, preds, schema = files
    report = evaluate_files(preds, dataset, schema=schema)
    assert report["missing_predictions"] == [4] and report["unparseable"] == [3]
    m = report["metrics"]
    # only line 1 parses: JSON and schema valid 1 of 3; its company differs in case only
    assert m["n"] == 3 and m["json_valid"] == pytest.approx(1 / 3) and m["schema_valid"] == pytest.approx(1 / 3)
    # fields: 1.company wrong (case), 1.total right; lines 3 (unparseable) and 4 (missing)
    # score zero on both fields, 3.total's gold null included -> 1 of 6; gold-filled:
    # 1.company, 1.total, 3.company, 4.company, 4.total -> 1 of 5
    assert m["field_accuracy"] == pytest.approx(1 / 6) and m["field_accuracy_filled"] == pytest.approx(1 / 5)
    assert (m["omissions"], m["gold_filled"]) == (3, 5)
    ci = evaluate_files(preds, dataset, schema=schema, case_insensitive=True)["metrics"]
    assert ci["field_accuracy"] == pytest.approx(2 / 6) and ci["field_accuracy_filled"] == pytest.approx(2 / 5)
    # Every record's outcome, by dataset line, for paired tests
    records = report["records"]
    assert records["line"] == [1, 3, 4] and records["json_valid"] == [1, 0, 0] and records["schema_valid"] == [1, 0, 0]
    assert records["fields"]["company"]["correct"] == [0, 0, 0] and records["fields"]["total"]["correct"] == [1, 0, 0]
    assert records["fields"]["total"]["gold_empty"] == [0, 1, 0]
    assert "fractions" in report["units"]
    # without --schema, the schema.json beside the dataset is found
    assert evaluate_files(preds, dataset)["metrics"]["schema_checked"] == 3


def test_schema_from_the_prompt(tmp_path):
    # the bundled example carries its schema in the user prompt; perfect predictions
    records = list(iter_records(BUNDLED_EXAMPLE))
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"line": r.line, "output": r.reply}) + "\n" for r in records))
    m = evaluate_files(preds, BUNDLED_EXAMPLE)["metrics"]
    assert m["schema_checked"] == len(records) == 3
    assert (m["schema_valid"], m["field_accuracy"], m["f1"], m["ted_accuracy"]) == (1.0, 1.0, 1.0, 1.0)
    # two gold-empty fields (line 2 Titulaire, line 3 date), both predicted empty
    assert (m["hallucinations"], m["omissions"], m["gold_empty"]) == (0, 0, 2)


def test_parse_output_is_strict():
    assert parse_output(' {"a": 1}\n') == {"a": 1}
    for bad in ('```json\n{"a": 1}\n```', "[1]", '{"a": NaN}', '{"a": 1} trailing', ""):
        assert parse_output(bad) is None


def test_bad_prediction_files_name_file_and_line(files, tmp_path):
    dataset, preds, schema = files
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"line": 1, "output": "{}"}) + "\n" + json.dumps({"line": 2, "output": "{}"}) + "\n")
    with pytest.raises(DataError, match=rf"{stray}:2: predicts dataset line 2, but .*data.jsonl has no record on line 2"):
        evaluate_files(stray, dataset, schema=schema)
    twice = tmp_path / "twice.jsonl"
    twice.write_text(json.dumps({"line": 1, "output": "{}"}) + "\n" + json.dumps({"line": 1, "output": "{}"}) + "\n")
    with pytest.raises(DataError, match=rf"{twice}:2: a second prediction for line 1"):
        evaluate_files(twice, dataset, schema=schema)
    shape = tmp_path / "shape.jsonl"
    shape.write_text(json.dumps({"line": "1", "output": "{}"}) + "\n")
    with pytest.raises(DataError, match=rf"{shape}:1: expected"):
        evaluate_files(shape, dataset, schema=schema)
    bad_gold = tmp_path / "bad_gold.jsonl"
    bad_gold.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match=rf"{bad_gold}:1: the last assistant reply is not a JSON object"):
        evaluate_files(preds, bad_gold, schema=schema)


def test_cli_end_to_end(files, tmp_path):
    dataset, preds, schema = files
    out = tmp_path / "report.json"
    args = ["evaluate", "--predictions", str(preds), "--dataset", str(dataset), "--schema", str(schema)]
    result = CliRunner().invoke(app, [*args, "--case-insensitive", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "field accuracy" in result.output and "company" in result.output
    # percentages everywhere: field accuracy 2/6, gold-not-null 2/5, JSON valid 1/3
    assert "33.3%" in result.output and "40.0%" in result.output and "0.333" not in result.output
    assert "field accuracy (gold not null)" in result.output
    # the wrong fields by kind: line 1's company (case) is in no source, lines 3 and 4 gave no object
    assert "wrong fields by kind" in result.output
    report = json.loads(out.read_text())
    assert report["case_insensitive"] is True and report["metrics"]["field_accuracy"] == pytest.approx(2 / 6)
    assert report["metrics"]["per_field"]["company"]["accuracy"] == pytest.approx(1 / 3)
    assert report["errors"]["counts"]["invalid"] == 4 and sum(report["errors"]["counts"].values()) == 4

    default = CliRunner().invoke(app, args)
    assert default.exit_code == 0 and (tmp_path / "preds.report.json").is_file()

    missing = CliRunner().invoke(app, ["evaluate", "--predictions", str(tmp_path / "nope.jsonl"), "--dataset", str(dataset)])
    assert missing.exit_code == 2 and "nope.jsonl not found" in " ".join(missing.output.split())  # rich wraps


def test_predicted_only_scores_just_the_predicted_records(tmp_path):
    from model_garden.evaluation import evaluate_files

    data = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": json.dumps({"a": v})}]}
        for v in ("x", "y", "z")
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"line": 1, "output": json.dumps({"a": "x"})}) + "\n")
    whole = evaluate_files(preds, data)
    assert whole["metrics"]["field_accuracy"] == pytest.approx(1 / 3) and whole["missing_predictions"] == [2, 3]
    part = evaluate_files(preds, data, predicted_only=True)
    assert part["metrics"]["field_accuracy"] == 1.0 and part["metrics"]["n"] == 1 and part["missing_predictions"] == []


def test_an_enumerated_value_is_no_invented_value(tmp_path):
    """The source check counts what the model wrote freely: an enum's choice need not be in
    the document, a free string must."""
    schema = {"type": "object", "properties": {"fuel": {"enum": ["ES", "EH"]}, "name": {"type": "string"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    gold = {"fuel": "EH", "name": "Ana"}
    record = {"source": "C.1: Ana", "messages": [{"role": "user", "content": "read"}, {"role": "assistant", "content": json.dumps(gold)}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"line": 1, "output": json.dumps({"fuel": "EH", "name": "Bob"})}) + "\n")
    check = evaluate_files(tmp_path / "p.jsonl", tmp_path / "d.jsonl", check_dataset=False)["source_check"]
    assert check == {"records": 1, "values": 1, "values_outside": 1, "outside": {1: ["Bob"]}}
