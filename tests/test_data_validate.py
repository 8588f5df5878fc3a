"""``validate_dataset`` and ``model-garden validate-data``: every bad line found with its
number and reason, streaming in bounded memory.

Run: ``.venv/bin/python -m pytest tests/test_data_validate.py -q``
"""

from __future__ import annotations

import io
import json
import random
import tracemalloc

import pytest
from PIL import Image
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.data.images import ImagePolicy, data_uri
from model_garden.masking.scan import validate_dataset
from model_garden.masking import MaskConfig, build_example
from model_garden.training.config import MaskOptions


def _reasons(report) -> dict[int, str]:
    """Line -> the reason, without the ``file:line`` every message starts with."""
    return {line: message.split(f":{line}", 1)[1].lstrip(":, ") for line, message in report.errors}


def _png(size=(8, 6), noise: bool = False) -> bytes:
    img = Image.new("RGB", size, (200, 30, 30))
    if noise:
        rng = random.Random(0)
        img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _line(user, reply='{"total": "3.00"}', **extra) -> str:
    messages = [{"role": "system", "content": "Extract."}, {"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return json.dumps({"messages": messages, **extra})


def _image_user(url: str) -> list[dict]:
    return [{"type": "text", "text": "Read the receipt."}, {"type": "image_url", "image_url": {"url": url}}]


@pytest.fixture
def dataset(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "ok.png").write_bytes(_png((10, 20)))
    (tmp_path / "outside.png").write_bytes(_png())
    lines = [
        _line("Receipt: TOTAL 3.00"),  # 1 good
        '{"messages": [',  # 2 not JSON
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),  # 3 no assistant turn
        json.dumps({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "{}"}]}),  # 4
        _line(_image_user("data:image/png;base64,aGVsbG8=")),  # 5 unreadable image
        _line(_image_user("https://example.com/r.png")),  # 6 remote image
        _line(_image_user("../outside.png")),  # 7 path leaving the dataset folder
        _line("Receipt: TOTAL 3.00", reply="The total is 3.00"),  # 8 reply not JSON
        "",  # 9 blank: not an error
        _line(_image_user("images/ok.png")),  # 10 good, local image
        _line(_image_user(data_uri(_png((30, 40)), "image/png"))),  # 11 good, inline image
    ]
    path = tmp_path / "data" / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with path.open("ab") as fh:
        fh.write(b'{"messages": "caf\xe9"}\n')  # 12 not UTF-8
    return path


def test_each_bad_line_is_reported_with_its_number(dataset):
    report = validate_dataset(dataset, cfg=MaskConfig(strategy="aggressive"))
    reasons = _reasons(report)
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 12]
    assert reasons[2].startswith("not JSON")
    assert reasons[3] == "no assistant message"
    assert "unknown role 'robot'" in reasons[4]
    assert reasons[5].startswith("image 0: unreadable image")
    assert "remote image https://example.com/r.png refused" in reasons[6]
    assert "leaves the dataset folder" in reasons[7]
    assert "reply is not JSON" in reasons[8] and "aggressive" in reasons[8]
    assert reasons[12].startswith("not UTF-8")
    assert report.counts == {"records": 11, "valid": 3, "bad": 8, "blank lines": 1, "images": 2, "truncated": 0}
    assert report.image_sizes() == {"min": (10, 20), "median": (30, 40), "max": (30, 40)}
    assert [line for line, _ in report.errors] == [2, 3, 4, 5, 6, 7, 8, 12]


def test_flags_relax_the_image_rules_and_strategy_none_accepts_prose(dataset):
    report = validate_dataset(dataset, policy=ImagePolicy(allow_outside_paths=True, max_pixels=500))
    reasons = _reasons(report)
    assert 7 not in reasons and 8 not in reasons
    assert "exceeds the limit of 500" in reasons[11]  # 30x40 inline image over the pixel limit


def test_default_strategy_trains_a_prose_reply_whole_instead_of_refusing_it(dataset, smollm2_tokenizer):
    """auto (the default recipe) masks keys in JSON replies; a reply without JSON is
    trained whole (a fallback, as response-only loss), where a named JSON strategy refuses it."""
    auto = MaskOptions().mask_config()
    assert (auto.strategy, auto.structural_weight, auto.require_json) == ("moderate", 0.1, False)
    assert 8 not in _reasons(validate_dataset(dataset, cfg=auto))
    assert "reply is not JSON" in _reasons(validate_dataset(dataset, cfg=MaskConfig(strategy="moderate")))[8]
    messages = json.loads(_line("Receipt: TOTAL 3.00", reply="The total is 3.00"))["messages"]
    as_auto, as_none = build_example(smollm2_tokenizer, messages, auto), build_example(smollm2_tokenizer, messages, MaskConfig())
    assert as_auto["loss_weights"] == as_none["loss_weights"] and not as_auto["json_found"]
    keyed = build_example(smollm2_tokenizer, json.loads(_line("Receipt: TOTAL 3.00"))["messages"], auto)
    assert sorted({w for w in keyed["loss_weights"] if w}) == pytest.approx([0.1, 1.0])


def test_token_checks_with_a_tokenizer(tmp_path, smollm2_tokenizer):
    path = tmp_path / "t.jsonl"
    long_prompt = "Receipt: " + "ITEM 1.00 " * 60
    path.write_text("\n".join([_line("Receipt: TOTAL 3.00"), _line(long_prompt), _line(_image_user("x.png"))]) + "\n")
    report = validate_dataset(path, smollm2_tokenizer, MaskConfig(strategy="aggressive"), max_length=60)
    reasons = _reasons(report)
    assert sorted(reasons) == [2, 3]
    assert reasons[2].startswith("no trained token within --max-length 60 (")
    assert "image file" in reasons[3]  # x.png is missing: the image is checked before the model is
    (tmp_path / "x.png").write_bytes(_png())
    report = validate_dataset(path, smollm2_tokenizer)
    assert "text-only" in _reasons(report)[3]
    assert len(report.lengths) == 2 and report.lengths[0] < 60 < report.lengths[1] and report.truncated == 0
    cut = validate_dataset(path, smollm2_tokenizer, max_length=report.lengths[1] - 2)
    assert sorted(_reasons(cut)) == [3] and cut.truncated == 1  # cut inside the reply: still trains
    assert list(cut.lengths) == list(report.lengths)  # lengths are before truncation


def test_cli_exit_codes(dataset, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["validate-data", str(dataset), "--mask-strategy", "aggressive"])
    assert bad.exit_code == 1
    assert "train.jsonl:2:" in bad.output and "train.jsonl:12:" in bad.output and "train.jsonl:9:" not in bad.output
    good = tmp_path / "good.jsonl"
    good.write_text(_line("Receipt: TOTAL 3.00") + "\n")
    ok = runner.invoke(app, ["validate-data", str(good)])
    assert ok.exit_code == 0 and "no problem found" in ok.output
    missing = runner.invoke(app, ["validate-data", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "nope.jsonl not found" in " ".join(missing.output.split())  # rich wraps lines


def test_streams_in_bounded_memory(tmp_path):
    n = 20_000
    line = _line(_image_user(data_uri(_png((16, 16), noise=True), "image/png"))) + "\n"
    path = tmp_path / "big.jsonl"
    path.write_text(line * n)
    tracemalloc.start()
    try:
        report = validate_dataset(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.images == n
    # The file is ~28 MB; holding it, or even its parsed lines, would show here. What
    # does grow is the report's per-image size arrays: 8 bytes an image.
    assert path.stat().st_size > 25_000_000 and peak < 1_000_000, peak
