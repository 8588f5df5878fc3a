"""``predict``: training folders with a LoRA adapter, plain model folders, vision models,
the schema lookup, incremental output and the CLI.

Run: ``.venv/bin/python -m pytest tests/test_predict.py -q``
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.cli.common import BUNDLED_EXAMPLE
from model_garden.data.forms import make_forms
from model_garden.data.jsonl import JsonlDataset
from model_garden import cores as cores_module
from model_garden.cores import default_threads
from model_garden.inference.generate import generate_batch, logit_width
from model_garden.inference.loading import load_for_inference
from model_garden.inference.predict import predict
from model_garden.masking import ChatCodec
from model_garden.models import peft_quietly


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, users: list) -> Path:
    rows = [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": "{}"}]} for u in users]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "schema.json"
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"], "additionalProperties": False}
    path.write_text(json.dumps(schema), encoding="utf-8")
    return path


def test_lora_training_folder_predicts_like_its_base(tmp_path, smollm2_tokenizer):
    from peft import LoraConfig, get_peft_model

    from model_garden.models import load_model

    base = load_model("smollm2-135m").eval()
    data = JsonlDataset(BUNDLED_EXAMPLE)
    codec = ChatCodec.for_data(smollm2_tokenizer, BUNDLED_EXAMPLE)
    prompts = [codec.encode_prompt(data[i]) for i in (0, 1)]
    schemas = [codec.schema(data[i]) for i in (0, 1)]
    expected = generate_batch(base, smollm2_tokenizer, prompts, schemas=schemas, max_new_tokens=8)

    run = tmp_path / "run"
    with peft_quietly():
        get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(run)
    smollm2_tokenizer.save_pretrained(run)
    config = json.loads((run / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded model's public id, as training writes it
    (run / "adapter_config.json").write_text(json.dumps(config))

    stats = predict(run, BUNDLED_EXAMPLE, tmp_path / "preds.jsonl", batch_size=2, max_new_tokens=8, limit=2)
    assert stats["examples"] == 2 and stats["new_tokens"] == 16
    preds = _lines(tmp_path / "preds.jsonl")
    assert [p["line"] for p in preds] == [1, 2]
    assert all(p["constrained"] and p["output"].startswith('{"Marque": ') for p in preds)
    # A freshly initialised LoRA adds nothing: the merged model says what the base says.
    assert [(p["output"], p["new_tokens"]) for p in preds] == [r[:2] for r in expected]


def test_adapter_is_merged_into_its_base_folder(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with peft_quietly():
        trained = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    trained.save_pretrained(tmp_path / "run")  # records tiny_model_dir as the base; no tokenizer saved here
    ids = torch.tensor([[1, 42, 7, 99]])
    with torch.inference_mode():
        want = trained(input_ids=ids).logits

    model, tokenizer = load_for_inference(tmp_path / "run")
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert len(tokenizer) == 49152  # the base folder's tokenizer
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits, want, atol=1e-3)


def test_plain_model_folder_with_schema_file(tmp_path, tiny_model_dir, schema_file):
    data = _write_jsonl(tmp_path / "d.jsonl", ["a", "a much longer question than the first", "c"])
    predict(tiny_model_dir, data, tmp_path / "p.jsonl", schema=schema_file, batch_size=2, max_new_tokens=10)
    preds = _lines(tmp_path / "p.jsonl")
    assert [p["line"] for p in preds] == [1, 2, 3]
    assert {p["output"] for p in preds} <= {'{"ok": true}', '{"ok": false}'}
    assert all(p["new_tokens"] < 10 for p in preds)  # the grammar ended each reply with EOS


def test_resume_refuses_a_partial_file_it_did_not_write(tmp_path, tiny_model_dir, schema_file):
    """--resume on a partial file with a line that is no prediction row: one message
    naming the file and line, and the file left as it was."""
    from model_garden.data.sample import DataError

    data = _write_jsonl(tmp_path / "d.jsonl", ["a", "b"])
    partial = tmp_path / "p.jsonl.partial"
    partial.write_text('{"line": 1, "output": "{}"}\nnotes of mine\n')
    with pytest.raises(DataError, match=r"p\.jsonl\.partial:2: not a prediction row; --resume"):
        predict(tiny_model_dir, data, tmp_path / "p.jsonl", schema=schema_file, max_new_tokens=4, resume=True)
    assert partial.read_text() == '{"line": 1, "output": "{}"}\nnotes of mine\n'


def test_predict_gives_the_callers_thread_count_back(tmp_path, tiny_model_dir, schema_file):
    # compare trains the next run in the same process: it must not inherit predict's threads.
    data = _write_jsonl(tmp_path / "d.jsonl", ["a"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        stats = predict(tiny_model_dir, data, tmp_path / "p.jsonl", schema=schema_file, max_new_tokens=4, threads=1)
        assert stats["threads"] == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("machine", "own", "threads"), [(2.0, 2.0, 4), (2.0, 0.0, 2), (4.0, 1.0, 1), (0.0, 0.0, 4)])
def test_default_threads_counts_other_processes_not_its_own(monkeypatch, machine, own, threads):
    # machine / own: cores the whole machine and this process keep busy, on 4 cores.
    clock = [0.0]
    monkeypatch.setattr(cores_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cores_module, "busy_seconds", lambda: (machine * clock[0], own * clock[0]))
    monkeypatch.setattr(cores_module.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(cores_module.time, "perf_counter", lambda: clock[0])
    assert default_threads(window=0.5) == threads


def test_busy_seconds_sees_this_process_work():
    machine0, own0 = cores_module.busy_seconds()
    sum(i * i for i in range(2_000_000))
    machine1, own1 = cores_module.busy_seconds()
    assert own1 - own0 > 0.02 and machine1 - machine0 >= (own1 - own0) * 0.5


def test_bfloat16_weights_decode_under_the_schema_and_are_recorded(tmp_path, tiny_model_dir, schema_file, monkeypatch):
    from model_garden.inference import loading

    models = []
    real = loading.hf_generator
    monkeypatch.setattr(loading, "hf_generator", lambda net, processing: models.append(net) or real(net, processing))
    data = _write_jsonl(tmp_path / "d.jsonl", ["a", "b"])
    out = tmp_path / "p.jsonl"
    predict(tiny_model_dir, data, out, schema=schema_file, max_new_tokens=10, dtype="bfloat16")
    assert {p.dtype for p in models[0].parameters()} == {torch.bfloat16}
    assert {p["output"] for p in _lines(out)} <= {'{"ok": true}', '{"ok": false}'}
    assert json.loads((tmp_path / "p.jsonl.meta.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="--dtype must be one of float32, bfloat16; got 'float16'"):
        predict(tiny_model_dir, data, tmp_path / "q.jsonl", schema=schema_file, dtype="float16")
    with pytest.raises(ValueError, match="--dtype bfloat16 is for --engine hf"):
        predict(tmp_path, data, tmp_path / "q.jsonl", schema=schema_file, engine="onnxruntime-genai", dtype="bfloat16")


def test_unconstrained_needs_no_schema_but_constrained_does(tmp_path, tiny_model_dir):
    data = _write_jsonl(tmp_path / "d.jsonl", ["no schema here"])
    with pytest.raises(ValueError, match=r"d\.jsonl:1: no JSON schema .*--schema FILE.*--no-constrained"):
        predict(tiny_model_dir, data, tmp_path / "p.jsonl", max_new_tokens=4)
    predict(tiny_model_dir, data, tmp_path / "p.jsonl", constrained=False, max_new_tokens=4)
    (pred,) = _lines(tmp_path / "p.jsonl")
    assert pred["line"] == 1 and pred["constrained"] is False and pred["new_tokens"] <= 4


def test_a_bad_record_stops_predict_before_decoding_and_keeps_earlier_output(tmp_path, tiny_model_dir, schema_file):
    image = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x.png"}}]
    data = _write_jsonl(tmp_path / "d.jsonl", ["a", "b", image])
    earlier = tmp_path / "p.jsonl"
    earlier.write_text("earlier results\n")
    with pytest.raises(Exception, match=r"nothing was decoded:\n  .*d\.jsonl:3.*text-only"):
        predict(tiny_model_dir, data, earlier, schema=schema_file, batch_size=2, max_new_tokens=6)
    assert earlier.read_text() == "earlier results\n"


def test_vision_folder_on_forms_with_schema_beside_the_data(tmp_path):
    from model_garden.testing.models import tiny_idefics3

    model, processor = tiny_idefics3()
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    make_forms(tmp_path / "forms", n=4)
    predict(tmp_path / "vlm", tmp_path / "forms" / "vision" / "train.jsonl", tmp_path / "p.jsonl", batch_size=2, max_new_tokens=6, limit=2)
    preds = _lines(tmp_path / "p.jsonl")
    first_key = next(iter(json.loads((tmp_path / "forms" / "schema.json").read_text())["properties"]))
    assert [p["line"] for p in preds] == [1, 2]
    # The grammar forces this opening; an untrained model may spell it in any tokens.
    forced = f'{{"{first_key}": {{"contents": '
    assert all(forced.startswith(p["output"]) or p["output"].startswith(forced) for p in preds), preds


def test_qwen2_vl_with_images_and_padded_logits(tmp_path):
    from model_garden.testing.models import tiny_qwen2_vl

    model, processor = tiny_qwen2_vl("2")
    assert logit_width(model) == 151936 > len(processor.tokenizer)
    make_forms(tmp_path, n=4)
    codec = ChatCodec.for_data(processor, tmp_path / "vision" / "train.jsonl")
    data = JsonlDataset(tmp_path / "vision" / "train.jsonl")
    prompts = [codec.encode_prompt(data[i]) for i in (0, 1)]
    schemas = [codec.schema(data[i]) for i in (0, 1)]
    replies = generate_batch(model, processor, prompts, schemas=schemas, max_new_tokens=12)
    first_key = next(iter(schemas[0]["properties"]))
    forced = f'{{"{first_key}": {{"contents": '
    assert all(n == 12 and (forced.startswith(text) or text.startswith(forced)) for text, n, _ in replies), replies


def test_cli(tmp_path, tiny_model_dir, schema_file):
    data = _write_jsonl(tmp_path / "d.jsonl", ["a", "b"])
    out = tmp_path / "p.jsonl"
    args = ["predict", "--model", str(tiny_model_dir), "--dataset", str(data), "--out", str(out), "--max-new-tokens", "6"]
    result = CliRunner().invoke(app, [*args, "--schema", str(schema_file), "--limit", "1", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and [p["line"] for p in _lines(out)] == [1]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "no JSON schema" in result.output and "--no-constrained" in result.output


def test_shared_prompt_prefix_is_computed_once_with_the_same_replies(smollm2_tokenizer):
    from model_garden.inference.generate import MIN_SHARED_PREFIX, shared_prefix_length
    from model_garden.models import load_model

    model = load_model("smollm2-135m").eval()
    data = JsonlDataset(BUNDLED_EXAMPLE)
    codec = ChatCodec.for_data(smollm2_tokenizer, BUNDLED_EXAMPLE)
    rows = (0, 1, 2)
    prompts = [codec.encode_prompt(data[i]) for i in rows]
    schemas = [codec.schema(data[i]) for i in rows]
    assert len({len(p["input_ids"]) for p in prompts}) == len(rows)  # unequal: the rows are padded between prefix and rest
    shared = shared_prefix_length(model, prompts)
    assert shared >= MIN_SHARED_PREFIX
    assert all(p["input_ids"][:shared] == prompts[0]["input_ids"][:shared] for p in prompts)
    assert len({p["input_ids"][shared] for p in prompts}) > 1  # the longest shared run, not less
    whole = generate_batch(model, smollm2_tokenizer, prompts, schemas=schemas, max_new_tokens=24, share_prefix=False)
    shared_once = generate_batch(model, smollm2_tokenizer, prompts, schemas=schemas, max_new_tokens=24)
    assert [r[:2] for r in shared_once] == [r[:2] for r in whole]
    for a, b in zip(shared_once, whole):
        assert a.scores.keys() == b.scores.keys()
        for pointer in a.scores:
            assert a.scores[pointer]["product"] == pytest.approx(b.scores[pointer]["product"], rel=1e-4)
    assert shared_prefix_length(model, prompts[:1]) == 0  # nothing to share in a batch of one
