"""Synthetic vehicle-registration forms: layout of the output, determinism, schema validity.

Run: ``.venv/bin/python -m pytest tests/test_data_forms.py -q``
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from model_garden import jsonfmt
from model_garden.cli import app
from model_garden.data.forms import FIELDS, IMAGE_SIZE, make_forms, prompt_schema, split_sizes
from model_garden.data.images import ImagePolicy, load_image
from model_garden.data.schema import find_embedded_schema
from model_garden.masking.scan import validate_dataset


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("forms")
    assert make_forms(out, n=204, seed=0) == {"train": 164, "val": 20, "test": 20}
    return out


def test_layout_and_ids(forms):
    for kind in ("text", "vision"):
        ids = [r["id"] for split in ("train", "val", "test") for r in _lines(forms / kind / f"{split}.jsonl")]
        assert ids == [f"{i:04d}" for i in range(204)]
    assert sorted(p.name for p in (forms / "images").iterdir()) == [f"{i:04d}.png" for i in range(204)]
    assert json.loads((forms / "schema.json").read_text(encoding="utf-8"))["required"] == [f.key for f in FIELDS]


def test_every_reply_follows_the_schema(forms):
    schema = json.loads((forms / "schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    for split in ("train", "val", "test"):
        for record in _lines(forms / "text" / f"{split}.jsonl"):
            reply = record["messages"][-1]["content"]
            answer = json.loads(reply)
            assert reply == jsonfmt.dumps(answer)
            errors = list(validator.iter_errors(answer))
            assert not errors, f"{record['id']}: {errors[0].message}"


def test_prompts_embed_the_schema_and_transcription(forms):
    schema = json.loads((forms / "schema.json").read_text(encoding="utf-8"))
    text = _lines(forms / "text" / "train.jsonl")[0]
    vision = _lines(forms / "vision" / "train.jsonl")[0]
    assert [m["role"] for m in text["messages"]] == ["system", "user", "assistant"]
    # The prompt states the compact schema; every answer satisfies it and the strict one.
    stated = find_embedded_schema(text["messages"][1]["content"])
    assert stated == prompt_schema() and stated != schema
    answer = json.loads(text["messages"][2]["content"])
    Draft202012Validator(stated).validate(answer)
    for f in FIELDS:  # the transcription shows each value after its code, or the code alone when blank
        contents = answer[f.key]["contents"]
        expected = f"\n{f.code}:" if contents is None else f"\n{f.code}: {contents}\n"
        assert expected in text["messages"][1]["content"] + "\n", (f.key, contents)
    part_text, part_image = vision["messages"][1]["content"]
    assert find_embedded_schema(part_text["text"]) == stated
    url = part_image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert load_image(url).size == IMAGE_SIZE
    assert load_image("images/0000.png", policy=ImagePolicy(base_dir=forms)).tobytes() == load_image(url).tobytes()
    assert vision["messages"][2] == text["messages"][2]


def test_blank_fields_are_null_and_only_where_nullable(forms):
    nulls = {f.key: 0 for f in FIELDS}
    for record in _lines(forms / "text" / "train.jsonl"):
        for key, value in json.loads(record["messages"][2]["content"]).items():
            assert value["confidence_score"] is None
            nulls[key] += value["contents"] is None
    for f in FIELDS:
        assert (nulls[f.key] > 0) == (f.blank > 0), (f.key, nulls[f.key])


def test_values_look_real(forms):
    answers = [json.loads(r["messages"][2]["content"]) for r in _lines(forms / "text" / "train.jsonl")]
    assert all(re.fullmatch(r"[A-Z]{2}-\d{3}-[A-Z]{2}", a["Immatriculation"]["contents"]) for a in answers)
    assert all(len(a["VIN"]["contents"]) == 17 for a in answers)
    holders = " ".join(a["Titulaire"]["contents"] + a["Adresse"]["contents"] for a in answers)
    assert set("éèçëïÉÎ") <= set(holders)  # accents on both cases reach the data


def test_notes_semantic_pattern_finds_every_string_value(forms):
    pattern = re.compile(r'"contents":\s*"([^"]*)"')
    record = _lines(forms / "text" / "train.jsonl")[0]
    reply = record["messages"][2]["content"]
    strings = [v["contents"] for v in json.loads(reply).values() if isinstance(v["contents"], str)]
    assert pattern.findall(reply) == strings


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_forms(a, n=6, seed=3)
    make_forms(b, n=6, seed=3)
    make_forms(c, n=6, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 6 + 6 + 1
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "text" / "train.jsonl").read_bytes() != (c / "text" / "train.jsonl").read_bytes()


def test_generated_files_validate(forms):
    for kind in ("text", "vision"):
        report = validate_dataset(forms / kind / "val.jsonl")
        assert report.ok and report.counts["valid"] == 20
    assert validate_dataset(forms / "vision" / "val.jsonl").image_sizes()["max"] == IMAGE_SIZE


def test_split_flags_are_checked():
    assert split_sizes(10, 0.0, 0.0) == {"train": 10, "val": 0, "test": 0}
    with pytest.raises(ValueError, match="--val-fraction"):
        split_sizes(10, 1.2, 0.1)
    with pytest.raises(ValueError, match="leave no training form"):
        split_sizes(2, 0.5, 0.5)


def test_cli(tmp_path):
    result = CliRunner().invoke(app, ["make-data", "forms", "--n", "5", "--out", str(tmp_path), "--val-fraction", "0.2", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert len(_lines(tmp_path / "text" / "train.jsonl")) == 4
    assert len(_lines(tmp_path / "vision" / "val.jsonl")) == 1
    assert "5 forms" in result.output
    bad = CliRunner().invoke(app, ["make-data", "forms", "--n", "0", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--n must be at least 1" in bad.output
