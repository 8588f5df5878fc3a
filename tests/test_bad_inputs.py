"""Bad input, tried as a new user would: every case exits with the documented code, names
the file and line, record or option, prints no traceback, and leaves no half-written
output. Then a property test: arbitrary bytes and JSON as dataset lines and as
predictions never raise anything but the project's one-line errors.

Run: ``.venv/bin/python -m pytest tests/test_bad_inputs.py -q`` (docs/reliability.md
lists the same cases).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.data.sample import DataError
from model_garden.evaluation.report import evaluate_files
from model_garden.masking.scan import validate_dataset

REPLY = '{"total": "3.00"}'


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _chat(user="Receipt: TOTAL 3.00", reply=REPLY) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def _write(path: Path, rows: list, bom: bool = False) -> Path:
    text = "".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def _image_chat(url: str) -> dict:
    return _chat(user=[{"type": "text", "text": "Read."}, {"type": "image_url", "image_url": {"url": url}}])


@pytest.fixture(scope="module")
def http_server():
    """A loopback server whose every path is 404 (the network guard allows loopback)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--base-model", str(model), "--dataset", str(data), "--output", str(out), "--max-steps", "1", "--batch-size", "2",
            "--bf16", "false", "--report-to", "none", "--save-steps", "1", *extra]


def _cases(tmp: Path, model: Path, server: str) -> list[tuple[str, list[str], int, list[str], list[Path]]]:
    """(name, CLI arguments, exit code, substrings of the message, paths that must not exist afterwards)."""
    good = _write(tmp / "good.jsonl", [_chat(), _chat("Receipt: TOTAL 4.00", '{"total": "4.00"}')])
    empty = _write(tmp / "empty.jsonl", [])
    prose = _write(tmp / "prose.jsonl", [_chat(), _chat(reply="The total is 3.00")])
    no_user = _write(tmp / "nouser.jsonl", [{"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": REPLY}]}])
    (tmp / "yaml").mkdir()
    wrong_type = tmp / "yaml" / "lr.yaml"
    wrong_type.write_text(f"dataset: {good}\nlr: fast\n")
    fractional = tmp / "yaml" / "steps.yaml"
    fractional.write_text(f"dataset: {good}\nmax_steps: 2.7\n")
    broken = tmp / "yaml" / "broken.yaml"
    broken.write_text("dataset: [unclosed\n")
    vtg_yaml = tmp / "yaml" / "vtg.yaml"
    vtg_yaml.write_text("annotations: a.txt\nvideo_dir: v\nnum_frames: lots\n")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    text_png = "data:text/plain;base64," + base64.b64encode(_png()).decode()
    not_image = "data:image/png;base64," + base64.b64encode(b"hello, not an image").decode()
    bad_uri = _write(tmp / "uri.jsonl", [_image_chat(text_png)])
    bad_payload = _write(tmp / "payload.jsonl", [_image_chat(not_image)])
    missing_remote = _write(tmp / "404.jsonl", [_image_chat(f"{server}/nothing.png")])
    refused = _write(tmp / "refused.jsonl", [_image_chat("http://127.0.0.1:9/x.png")])
    out = tmp / "out"
    preds = tmp / "preds.jsonl"
    return [
        ("wrong YAML type", ["train", "--config", str(wrong_type), "--output", str(out)], 2, [f"{wrong_type} line 2", "--lr must be a number", "'fast'"], [out]),
        ("fractional steps", ["train", "--config", str(fractional), "--output", str(out)], 2, [f"{fractional} line 2", "--max-steps must be an integer", "2.7"], [out]),
        ("YAML syntax", ["train", "--config", str(broken), "--output", str(out)], 2, [f"--config {broken}: not valid YAML at line"], [out]),
        ("VTG YAML type", ["train-vtg", "--config", str(vtg_yaml), "--output", str(out)], 2, [f"{vtg_yaml} line 3", "--num-frames must be an integer"], [out]),
        ("empty eval set", _train_args(model, good, out, "--eval-dataset", str(empty)), 2, [f"--eval-dataset {empty}: no usable example"], [out]),
        ("empty training set", _train_args(model, empty, out), 2, ["no usable example"], [out]),
        ("prose reply, JSON strategy", _train_args(model, prose, out, "--mask-strategy", "moderate"), 2, [f"{prose}:2: reply is not JSON", "--mask-strategy moderate", "--skip-bad-lines"], [out]),
        ("auto with a weight", _train_args(model, good, out, "--structural-weight", "0.3"), 2, ["--structural-weight needs a named --mask-strategy", "auto is moderate at structural weight 0.1"], [out]),
        ("output is a file", _train_args(model, good, a_file), 2, [f"--output {a_file} is a file"], []),
        ("output under a file", _train_args(model, good, a_file / "run"), 2, [str(a_file), "is a file, not a folder"], []),
        ("validate an empty file", ["validate-data", str(empty)], 1, ["holds no record"], []),
        ("validate prose under a JSON strategy", ["validate-data", str(prose), "--mask-strategy", "aggressive"], 1, [f"{prose}:2: reply is not JSON"], []),
        ("predict an empty file", ["predict", "--model", str(model), "--dataset", str(empty), "--out", str(preds)], 2, [f"--dataset {empty}: no record to predict"], [preds]),
        ("predict without a user turn", ["predict", "--model", str(model), "--dataset", str(no_user), "--out", str(preds), "--no-constrained"], 2, [f"{no_user}:1: no user message"], [preds]),
        ("missing relative model", ["predict", "--model", "tests/no-such-run", "--dataset", str(good), "--out", str(preds)], 2, ["--model tests/no-such-run: not a folder"], [preds]),
        ("data URI of another type", ["validate-data", str(bad_uri)], 1, [f"{bad_uri}:1, image 0: a data URI of type text/plain is not an image"], []),
        ("payload not an image", ["validate-data", str(bad_payload)], 1, [f"{bad_payload}:1, image 0: unreadable image (not an image format Pillow reads)"], []),
        ("remote 404", ["validate-data", str(missing_remote), "--allow-remote-images"], 1, [f"{missing_remote}:1, image 0: cannot fetch", "HTTP 404"], []),
        ("remote refused", ["validate-data", str(refused), "--allow-remote-images"], 1, [f"{refused}:1, image 0: cannot fetch", "refused"], []),
        ("unknown strategy", ["inspect-masks", "--dataset", str(good), "--mask-strategy", "bogus"], 2, ["--mask-strategy must be one of"], []),
    ]


def test_every_bad_input_gets_one_clear_line(tmp_path, tiny_model_dir, http_server):
    runner = CliRunner()
    for name, args, code, needles, absent in _cases(tmp_path, tiny_model_dir, http_server):
        result = runner.invoke(app, args)
        output = " ".join(result.output.split())
        assert result.exit_code == code, (name, result.exit_code, result.output)
        assert all(n in output for n in needles), (name, result.output)
        assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit), name
        assert not any(p.exists() for p in absent), (name, [p for p in absent if p.exists()])


def test_runs_own_their_folder_and_resume_only_their_own_run(tmp_path, tiny_model_dir):
    runner = CliRunner()
    data = _write(tmp_path / "d.jsonl", [_chat(), _chat("Receipt: TOTAL 4.00", '{"total": "4.00"}')])
    out = tmp_path / "run"
    assert runner.invoke(app, _train_args(tiny_model_dir, data, out)).exit_code == 0
    again = runner.invoke(app, _train_args(tiny_model_dir, data, out))
    assert again.exit_code == 2 and "already holds a run" in again.output and "--overwrite" in again.output
    changed = runner.invoke(app, _train_args(tiny_model_dir, data, out, "--resume", "latest", "--lr", "0.5", "--max-steps", "2"))
    text = " ".join(changed.output.split())
    assert changed.exit_code == 2 and "--lr: 0.0005 then, 0.5 now" in text and "--max-steps: 1 then, 2 now" in text
    assert "--allow-changes max_steps accepts that" in text
    more = runner.invoke(app, _train_args(tiny_model_dir, data, out, "--resume", "latest", "--max-steps", "2", "--allow-changes", "max_steps"))
    assert more.exit_code == 0, more.output
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    replaced = runner.invoke(app, _train_args(tiny_model_dir, data, out, "--overwrite"))
    assert replaced.exit_code == 0 and not (out / "checkpoints" / "checkpoint-2").exists()
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "todo.txt").write_text("mine")
    refused = runner.invoke(app, _train_args(tiny_model_dir, data, stranger, "--overwrite"))
    assert refused.exit_code == 2 and "holds no model-garden run" in refused.output and (stranger / "todo.txt").read_text() == "mine"


def test_predictions_for_other_data_are_refused_and_bom_is_read(tmp_path, tiny_model_dir):
    runner = CliRunner()
    data = _write(tmp_path / "d.jsonl", [_chat(), _chat("Receipt: TOTAL 4.00", '{"total": "4.00"}')], bom=True)
    assert runner.invoke(app, ["validate-data", str(data)]).exit_code == 0  # a byte-order mark is fine
    other = _write(tmp_path / "other.jsonl", [_chat("Receipt: TOTAL 9.00", '{"total": "9.00"}'), _chat()])
    preds = tmp_path / "p.jsonl"
    made = runner.invoke(app, ["predict", "--model", str(tiny_model_dir), "--dataset", str(data), "--out", str(preds), "--no-constrained", "--max-new-tokens", "4"])
    assert made.exit_code == 0, made.output
    mismatch = runner.invoke(app, ["evaluate", "--predictions", str(preds), "--dataset", str(other)])
    assert mismatch.exit_code == 2 and "fingerprints differ" in " ".join(mismatch.output.split())
    forced = runner.invoke(app, ["evaluate", "--predictions", str(preds), "--dataset", str(other), "--ignore-dataset-mismatch"])
    assert forced.exit_code == 0


_lines = st.one_of(
    st.binary(max_size=80),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["messages", "role", "content", "prompt", "completion", "conversations", "from", "value", "tools", "tool_calls", "images", "type", "text", "image_url", "url"]), inner, max_size=4)),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_lines, min_size=1, max_size=4))
def test_arbitrary_lines_never_escape_as_anything_but_a_clear_error(tmp_path, lines):
    data = tmp_path / "arb.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    report = validate_dataset(data)  # bad records are listed, never raised
    assert report.records + report.blank == data.read_bytes().count(b"\n")
    assert len(report.errors) + len(report.kept) == report.records
    preds = tmp_path / "arb-preds.jsonl"
    preds.write_bytes(b"\n".join(lines) + b"\n")
    good = _write(tmp_path / "good.jsonl", [_chat()])
    try:
        evaluate_files(preds, good, check_dataset=False)
    except (DataError, ValueError):
        pass
