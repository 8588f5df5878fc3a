"""``export`` and the inference engines: a merged export reloads with plain transformers and
decodes like the adapter run; ONNX Runtime GenAI decodes an ONNX export like the ``hf``
engine under the same schema; GGUF through llama.cpp's converter round-trips; vLLM where it
imports.

Run: ``.venv/bin/python -m pytest tests/test_export.py -q``
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
import yaml
from typer.testing import CliRunner

from model_garden import jsonfmt
from model_garden.cli import app
from model_garden.export import export
from model_garden.models import peft_quietly
from model_garden.grammar import JSON_OPTIONS, SchemaError

# Every path through this schema is short, so even a random model finishes its reply.
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["ok", "n"],
    "additionalProperties": False,
}
QUESTIONS = ["Is it ok?", "Give a number and say whether it is ok, as JSON."]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A LoRA training folder over a random 2-layer Llama (SmolLM2 vocabulary): the adapter
    changes the output, the tokenizer sits beside it, config.yaml names a dataset whose
    schema.json lies beside it."""
    from peft import LoraConfig, get_peft_model

    from model_garden.testing.models import tiny_text_model

    root = tmp_path_factory.mktemp("export")
    base = root / "base"
    tiny_text_model(smollm2_tokenizer).save_pretrained(base)
    smollm2_tokenizer.save_pretrained(base)
    data = root / "data"
    data.mkdir()
    (data / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": '{"ok": true, "n": 1}'}]} for q in QUESTIONS]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    run = root / "run"
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    with peft_quietly():
        get_peft_model(tiny_text_model(smollm2_tokenizer), lora).save_pretrained(run)
    config = json.loads((run / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (run / "adapter_config.json").write_text(json.dumps(config))
    smollm2_tokenizer.save_pretrained(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": str(data / "train.jsonl")}, "mask": {"mask_strategy": "none"}}))
    return run


@pytest.fixture(scope="module")
def prompt_ids(smollm2_tokenizer) -> list[list[int]]:
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    texts = [smollm2_tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    return [smollm2_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def _greedy(model, ids: list[int], steps: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=2)
    return out[0, len(ids):].tolist()


# hf and ONNX Runtime GenAI at fp32 compute the same logits up to float noise: the same
# replies token for token, and value scores (probabilities) within this relative tolerance.
SCORE_TOLERANCE = 1e-3


def _same_replies(got, want) -> None:
    assert [r[:2] for r in got] == [r[:2] for r in want]
    for g, w in zip(got, want):
        assert g.scores.keys() == w.scores.keys()
        for pointer, scores in g.scores.items():
            assert scores == pytest.approx(w.scores[pointer], rel=SCORE_TOLERANCE)


def _hf_constrained(model, tokenizer, ids: list[int], schema: dict | str, steps: int):
    """The hf engine's reply (``generate_batch``, what ``predict`` runs)."""
    from model_garden.inference.generate import generate_batch

    return generate_batch(model, tokenizer, [{"input_ids": ids}], schemas=[schema], max_new_tokens=steps)[0]


@pytest.fixture(scope="module")
def merged_fp32(run_dir, tmp_path_factory) -> Path:
    return export(run_dir, tmp_path_factory.mktemp("out") / "merged", "merged", dtype="float32")


def test_merged_export_loads_with_plain_transformers_and_decodes_like_the_adapter(run_dir, merged_fp32, prompt_ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    with peft_quietly():
        adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_fp32).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    for ids in prompt_ids:
        want = _greedy(adapter, ids, 16)
        assert _greedy(merged, ids, 16) == want
        # The adapter matters: the base alone says something else.
        assert _greedy(AutoModelForCausalLM.from_pretrained(base).eval(), ids, 16) != want
    assert len(AutoTokenizer.from_pretrained(merged_fp32)) == 49152
    shipped = json.loads((merged_fp32 / "schema.json").read_text())
    assert shipped == {**SCHEMA, "x-guidance": JSON_OPTIONS}


def test_merged_export_default_dtype_is_bfloat16(run_dir, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    out = export(run_dir, tmp_path / "bf16")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def test_the_runs_calibration_map_goes_with_the_export(run_dir, tmp_path):
    import shutil

    from model_garden.inference.calibration_map import CalibrationMap

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    CalibrationMap("product", [0.0, 1.0], [0.1, 0.9]).save(run / "calibration.json")
    out = export(run, tmp_path / "merged", "merged", dtype="float32")
    assert CalibrationMap.load(out / "calibration.json") == CalibrationMap.load(run / "calibration.json")


def test_vision_model_exports_merged_with_its_processor_and_only_merged(tmp_path):
    from transformers import AutoModelForImageTextToText

    from model_garden.testing.models import tiny_idefics3

    model, processor = tiny_idefics3()
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    out = export(tmp_path / "vlm", tmp_path / "merged", dtype="float32")
    loaded = AutoModelForImageTextToText.from_pretrained(out)
    assert type(loaded) is type(model)
    for (name, want), (_, got) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(got, want), name
    assert (out / "processor_config.json").is_file() or (out / "preprocessor_config.json").is_file()
    with pytest.raises(ValueError, match="--format onnx exports text models only"):
        export(tmp_path / "vlm", tmp_path / "onnx", "onnx")
    assert not (tmp_path / "onnx").exists()


def test_the_schema_is_found_as_training_found_it(tmp_path):
    from model_garden.data.schema import embed_schema
    from model_garden.export import run_schema

    data = tmp_path / "d.jsonl"
    row = {"messages": [{"role": "user", "content": f"Read this.\n{embed_schema(SCHEMA)}"}, {"role": "assistant", "content": "{}"}]}
    data.write_text(json.dumps(row) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": str(data)}}))
    assert run_schema(run) == SCHEMA  # the one the first record's prompt carries
    forced = tmp_path / "forced.json"
    forced.write_text(json.dumps({**SCHEMA, "required": ["ok"]}), encoding="utf-8")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": str(data)}, "mask": {"schema": str(forced)}}))
    assert run_schema(run)["required"] == ["ok"]  # schema-forced's file wins
    assert run_schema(tmp_path / "elsewhere") is None and run_schema(run, explicit=forced)["required"] == ["ok"]


def test_flags_and_folders_are_checked_before_any_work(run_dir, tmp_path):
    cases = [
        (dict(format="tflite"), "--format tflite"),
        (dict(format="merged", quantize="int4"), "--quantize applies to --format onnx"),
        (dict(format="onnx", dtype="float16"), "--dtype does not apply to --format onnx"),
        (dict(format="onnx", quantize="q8_0"), "--quantize q8_0: --format onnx takes int8, int4, fp32"),
        (dict(format="gguf", quantize="int4"), "--quantize int4: --format gguf takes q8_0"),
        (dict(format="gguf", dtype="float16", quantize="q8_0"), "not both"),
        (dict(dtype="fp8"), "--dtype fp8"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            export(run_dir, tmp_path / "x", **kwargs)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").touch()
    with pytest.raises(ValueError, match="--out .*full is not an empty folder"):
        export(run_dir, tmp_path / "full")
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": str(tmp_path / "gone.jsonl")}}))
    with pytest.raises(FileNotFoundError, match=r"names the dataset .*gone\.jsonl.*--schema FILE"):
        export(lost, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_export(run_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "m"), "--dtype", "float16"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "m" / "schema.json").is_file()
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "o"), "--format", "onnx", "--quantize", "int2"])
    assert result.exit_code == 2 and "--quantize int2" in result.output


@pytest.fixture(scope="module")
def onnx_fp32(run_dir, tmp_path_factory) -> Path:
    return export(run_dir, tmp_path_factory.mktemp("out") / "onnx", "onnx", quantize="fp32")


def test_onnx_runtime_genai_decodes_like_hf_under_the_same_schema(onnx_fp32, merged_fp32, prompt_ids, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    from model_garden.inference.engines import generate_ort

    assert {"genai_config.json", "model.onnx", "schema.json", "tokenizer.json"} <= {p.name for p in onnx_fp32.iterdir()}
    schema = json.loads((onnx_fp32 / "schema.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(merged_fp32).eval()
    want = [_hf_constrained(merged, smollm2_tokenizer, ids, SCHEMA, 24) for ids in prompt_ids]
    got = generate_ort(onnx_fp32, prompt_ids, [schema] * len(prompt_ids), 24, threads=1)
    _same_replies(got, want)
    assert all(got[0].scores.values())  # every value has its scores
    for reply, n, _ in got:
        assert n < 24 and reply == jsonfmt.dumps(json.loads(reply))  # ended, in the trained layout
        jsonschema.validate(json.loads(reply), SCHEMA)
    free = generate_ort(onnx_fp32, prompt_ids[:1], None, 5, threads=1)
    assert free[0][1] <= 5


def test_grounded_decoding_gives_the_same_replies_and_confidences_in_both_engines(onnx_fp32, merged_fp32, smollm2_tokenizer, shared_dir, tmp_path):
    """A handful of real SROIE receipts, each with its own grounded grammar (the schema
    make-data writes, its date pattern included): hf and ONNX
    Runtime GenAI write the same replies, every string value a span of the OCR text."""
    from transformers import AutoModelForCausalLM

    from model_garden.data.sources import open_source
    from model_garden.data.sroie import DECODER_SCHEMA as RECEIPT, convert_sroie
    from model_garden.inference.engines import generate_ort
    from model_garden.inference.grounding import grounded_constraint, value_spans
    from model_garden.masking.codec import ChatCodec

    convert_sroie(shared_dir / "data" / "sroie", tmp_path, n_train=496)
    samples = list(open_source(tmp_path / "test.jsonl"))
    codec = ChatCodec.for_data(smollm2_tokenizer, tmp_path / "test.jsonl")
    prompts = [codec.encode_prompt(s)["input_ids"] for s in samples]
    grammars = [grounded_constraint(RECEIPT, s, "source") for s in samples]
    merged = AutoModelForCausalLM.from_pretrained(merged_fp32).eval()
    want = [_hf_constrained(merged, smollm2_tokenizer, ids, grammar, 64) for ids, grammar in zip(prompts, grammars)]
    got = generate_ort(onnx_fp32, prompts, grammars, 64, threads=1)
    _same_replies(got, want)
    complete = [(r, s) for r, s in zip(got, samples) if r.scores]
    assert complete  # at least one reply ended within the budget
    for reply, sample in complete:
        values = {f"/{k}": v for k, v in json.loads(reply.text).items() if isinstance(v, str)}
        spans = value_spans(reply.text, sample.source_text())
        assert spans.keys() == values.keys()
        assert all(sample.source_text()[a:b].replace("\n", " ") == values[p] for p, (a, b) in spans.items())


def test_onnx_runtime_genai_batches_rows_with_their_own_grammars_like_one_at_a_time(onnx_fp32, prompt_ids):
    """One batch, prompts of different lengths (right-padded with a token no prompt holds),
    a different constraint per row: the replies and scores of decoding them one by one."""
    from model_garden.inference.engines import generate_ort

    other = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    prompts = [prompt_ids[0], prompt_ids[1], prompt_ids[1][:5] + prompt_ids[0]]  # three lengths
    constraints = [SCHEMA, other, None]
    batched = generate_ort(onnx_fp32, prompts, constraints, 12, threads=1)
    single = [generate_ort(onnx_fp32, [p], [c], 12, threads=1)[0] for p, c in zip(prompts, constraints)]
    _same_replies(batched, single)
    assert batched[1].text.startswith('{"n": ')


def test_predict_engines_give_the_same_predictions(run_dir, onnx_fp32, tmp_path):
    """``predict --engine onnxruntime-genai`` on the export and ``--engine hf`` on the run:
    the same prompts (the codec's ids), the same schema, the same replies."""
    from model_garden.inference.predict import predict

    data = Path(yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["dataset"])
    outputs = {}
    for engine, model in (("hf", run_dir), ("onnxruntime-genai", onnx_fp32)):
        out = tmp_path / f"{engine}.jsonl"
        stats = predict(model, data, out, engine=engine, max_new_tokens=24, batch_size=2)
        assert stats["examples"] == 2 and json.loads(Path(f"{out}.meta.json").read_text())["engine"] == engine
        outputs[engine] = [json.loads(line) for line in out.read_text().splitlines()]
    hf, ort = outputs["hf"], outputs["onnxruntime-genai"]
    assert [{k: v for k, v in row.items() if k not in ("confidence", "scores")} for row in hf] == [
        {k: v for k, v in row.items() if k not in ("confidence", "scores")} for row in ort
    ]
    for a, b in zip(hf, ort):
        assert a["confidence"] == pytest.approx(b["confidence"], rel=SCORE_TOLERANCE)
    with pytest.raises(ValueError, match="--engine onnxruntime-genai takes an exported folder"):
        predict(run_dir.parent / "base", data, tmp_path / "x.jsonl", engine="onnxruntime-genai")


def test_onnx_runtime_genai_refuses_a_schema_it_cannot_enforce(onnx_fp32, prompt_ids):
    from model_garden.inference.engines import generate_ort

    with pytest.raises(SchemaError, match="prompt 0: .*cannot be enforced"):
        generate_ort(onnx_fp32, prompt_ids[:1], [{"type": "object", "not": {"type": "null"}}], 4)


def test_onnx_int4_export_decodes_valid_json(run_dir, tmp_path, prompt_ids):
    from model_garden.inference.engines import generate_ort

    out = export(run_dir, tmp_path / "int4", "onnx", quantize="int4")
    # At fp32 the embedding and the output layer (49152x64 each) take 25 MB.
    assert sum(p.stat().st_size for p in out.iterdir()) < 20e6
    for reply, n, _ in generate_ort(out, prompt_ids, [SCHEMA] * len(prompt_ids), 24, threads=1):
        jsonschema.validate(json.loads(reply), SCHEMA)


@pytest.mark.slow
def test_gguf_export_round_trips_through_llama_cpp_converter(run_dir, merged_fp32, tmp_path):
    from transformers import AutoModelForCausalLM

    out = export(run_dir, tmp_path / "gguf", "gguf", dtype="float32")
    assert sorted(p.name for p in out.iterdir()) == ["model-f32.gguf", "schema.json"]
    ids = torch.tensor([[1, 42, 7, 99, 1000]])
    loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file="model-f32.gguf", dtype="float32").eval()
    with torch.inference_mode():
        want = AutoModelForCausalLM.from_pretrained(merged_fp32).eval()(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)


def test_vllm_decodes_like_hf_under_the_same_schema(merged_fp32, prompt_ids, smollm2_tokenizer):
    pytest.importorskip("vllm")  # needs a GPU; not run on the CPU-only reference machine
    from transformers import AutoModelForCausalLM

    from model_garden.inference.engines import generate_vllm

    merged = AutoModelForCausalLM.from_pretrained(merged_fp32).eval()
    want = [_hf_constrained(merged, smollm2_tokenizer, ids, SCHEMA, 24) for ids in prompt_ids]
    assert [r[:2] for r in generate_vllm(merged_fp32, prompt_ids, [SCHEMA] * len(prompt_ids), 24)] == [r[:2] for r in want]


def test_vllm_missing_is_named_with_its_install_command(monkeypatch, prompt_ids):
    import sys

    from model_garden.inference import engines

    monkeypatch.setitem(sys.modules, "vllm", None)  # what a machine without vLLM sees on import
    engines._vllm_engine.cache_clear()
    with pytest.raises(ImportError, match=r"--engine vllm needs vLLM .*pip install 'model-garden\[vllm\]'"):
        engines.generate_vllm("exports/merged", prompt_ids, [SCHEMA] * len(prompt_ids), 8)


def test_a_missing_extra_is_one_line_of_bad_input_in_the_cli(monkeypatch, tmp_path, merged_fp32):
    import sys

    from model_garden.inference import engines

    monkeypatch.setitem(sys.modules, "vllm", None)
    engines._vllm_engine.cache_clear()
    (tmp_path / "data.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    result = CliRunner().invoke(app, ["predict", "--model", str(merged_fp32), "--engine", "vllm", "--no-constrained",
                                      "--dataset", str(tmp_path / "data.jsonl"), "--out", str(tmp_path / "preds.jsonl")])
    assert result.exit_code == 2, result.output
    assert "error: --engine vllm needs vLLM (a supported GPU): pip install 'model-garden[vllm]'" in " ".join(result.output.split())
