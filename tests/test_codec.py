"""The one codec on every source format: prompt ids are the prefix of training ids, the
same records train the same masks from JSONL, parquet and ``save_to_disk``, TRL's
prompt-completion trains only the completion, ShareGPT and tool-calling chats train end
to end, and every command refuses the same image paths with the same message.

Run: ``.venv/bin/python -m pytest tests/test_codec.py -q``
"""

from __future__ import annotations

import importlib.resources
import io
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.data.images import data_uri
from model_garden.data.sources import open_source
from model_garden.masking import ChatCodec, MaskConfig, MaskingError
from model_garden.testing import qwen_tokenizer, tiny_qwen2_vl, tiny_text_model
from model_garden.training.config import TrainConfig
from model_garden.training.run import train

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _png(color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="PNG")
    return buf.getvalue()


def _records(layout: str, n: int = 3) -> list[dict]:
    """``n`` records of one layout (every record of a set has the same shape, as a table needs)."""
    out = []
    for i in range(n):
        answer = json.dumps({"total": f"{i}.50", "city": ["Paris", "Lyon", "Nice"][i % 3]})
        question = f"Receipt {i}: TOTAL {i}.50 in {['Paris', 'Lyon', 'Nice'][i % 3]}. Answer as JSON."
        if layout == "openai":
            out.append({"messages": [{"role": "system", "content": "Extract."}, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
        elif layout == "prompt-completion":
            out.append({"prompt": f"{question}\nJSON:", "completion": f" {answer}"})
        elif layout == "prompt-completion-chat":
            out.append({"prompt": [{"role": "user", "content": question}], "completion": [{"role": "assistant", "content": answer}]})
        elif layout == "sharegpt":
            out.append({"conversations": [{"from": "system", "value": "Extract."}, {"from": "human", "value": question}, {"from": "gpt", "value": answer}]})
        elif layout == "tools":
            call = {"type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
            out.append({"tools": json.dumps(TOOLS), "messages": [
                {"role": "user", "content": question + " And the weather?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": json.dumps({"temp": 20 + i})},
                {"role": "assistant", "content": answer},
            ]})
        elif layout == "vision":
            image = {"type": "image_url", "image_url": {"url": data_uri(_png((40 * i, 90, 30)), "image/png")}}
            # Content as parts in every turn: an Arrow column holds one type.
            reply = [{"type": "text", "text": answer}]
            out.append({"messages": [{"role": "user", "content": [{"type": "text", "text": question}, image]}, {"role": "assistant", "content": reply}]})
    return out


def _write(records: list[dict], folder: Path, container: str) -> Path:
    """The records as a JSONL file, a folder of parquet files, or a ``save_to_disk`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if container == "jsonl":
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path
    table = datasets.Dataset.from_list(records)
    if container == "parquet":
        (folder / "parquet").mkdir()
        table.to_parquet(str(folder / "parquet" / "part-0.parquet"))
        return folder / "parquet"
    table.save_to_disk(str(folder / "saved"))
    return folder / "saved"


@pytest.fixture(scope="module")
def qwen_tools_tokenizer():
    """Qwen2.5's byte-level BPE with Qwen2.5's own chat template (tools included), as TRL ships it."""
    tok = qwen_tokenizer()
    tok.chat_template = (importlib.resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    return tok


@pytest.fixture(scope="module")
def qwen2_vl():
    return tiny_qwen2_vl("2")


LAYOUTS = ["openai", "prompt-completion", "prompt-completion-chat", "sharegpt", "tools"]
CONTAINERS = ["jsonl", "parquet", "disk"]


def _check_prefix(codec: ChatCodec, source) -> None:
    for i in range(len(source)):
        sample = source.sample(i)
        train_ids = codec.encode_train(sample, MaskConfig(train_on="last_assistant"))
        prompt = codec.encode_prompt(sample)["input_ids"]
        assert train_ids["input_ids"][: len(prompt)] == prompt, sample.where
        first_trained = next(k for k, label in enumerate(train_ids["labels"]) if label != -100)
        assert first_trained == len(prompt), sample.where  # the reply starts where generation starts


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_prompt_ids_are_the_prefix_of_training_ids(tmp_path, layout, container, smollm2_tokenizer, qwen_tools_tokenizer):
    path = _write(_records(layout), tmp_path, container)
    source = open_source(path)
    assert len(source) == 3
    for tok in (qwen_tools_tokenizer,) if layout == "tools" else (smollm2_tokenizer, qwen_tools_tokenizer):
        _check_prefix(ChatCodec.for_data(tok, path), source)


@pytest.mark.parametrize("container", CONTAINERS)
def test_prompt_ids_are_the_prefix_for_a_vision_processor(tmp_path, container, qwen2_vl):
    _, processor = qwen2_vl
    path = _write(_records("vision"), tmp_path, container)
    codec = ChatCodec.for_data(processor, path)
    _check_prefix(codec, open_source(path))
    prompt = codec.encode_prompt(open_source(path).sample(0))
    assert prompt["pixel_values"].shape[0] > 0 and prompt["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_prompt_completion_trains_only_the_completion_and_its_end(tmp_path, smollm2_tokenizer):
    for layout, reply_end in (("prompt-completion", "<|im_end|>"), ("prompt-completion-chat", "<|im_end|>")):
        source = open_source(_write(_records(layout), tmp_path / layout, "jsonl"))
        ex = ChatCodec(smollm2_tokenizer).encode_train(source.sample(0), MaskConfig())
        trained = smollm2_tokenizer.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100])
        assert trained.strip() == json.dumps({"total": "0.50", "city": "Paris"}) + reply_end, (layout, trained)
    # A conversational prompt's own assistant turns are context, never trained.
    record = {"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "not me"}, {"role": "user", "content": "b"}],
              "completion": [{"role": "assistant", "content": "me"}]}
    source = open_source(_write([record], tmp_path / "multi", "jsonl"))
    ex = ChatCodec(smollm2_tokenizer).encode_train(source.sample(0), MaskConfig(train_on="all_assistant"))
    assert smollm2_tokenizer.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100]) == "me<|im_end|>"


def test_tool_calls_are_trained_and_tool_results_never(tmp_path, qwen_tools_tokenizer, smollm2_tokenizer):
    source = open_source(_write(_records("tools", 1), tmp_path, "jsonl"))
    ex = ChatCodec(qwen_tools_tokenizer).encode_train(source.sample(0), MaskConfig())
    trained = qwen_tools_tokenizer.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100])
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    assert trained == call + json.dumps({"total": "0.50", "city": "Paris"}) + "<|im_end|>"
    assert "tool_response" not in trained and '"temp"' not in trained
    text = qwen_tools_tokenizer.decode(ex["input_ids"])
    assert '"name": "get_weather"' in text.split("<|im_start|>user")[0]  # the tools reached the template's system turn
    # A template without tool support says so instead of training an empty turn.
    with pytest.raises(MaskingError, match=r"message 1: the chat template renders no tool calls"):
        ChatCodec(smollm2_tokenizer).encode_train(source.sample(0), MaskConfig())


@pytest.fixture(scope="module")
def qwen_model_dir(tmp_path_factory, qwen_tools_tokenizer) -> Path:
    """A random 2-layer Llama over the Qwen vocabulary, with Qwen2.5's tool template."""
    folder = tmp_path_factory.mktemp("qwen_tiny")
    tiny_text_model(qwen_tools_tokenizer).save_pretrained(folder)
    qwen_tools_tokenizer.save_pretrained(folder)
    return folder


def _train(model_dir: Path, data: Path, out: Path, **options) -> dict:
    cfg = TrainConfig.from_options(
        base_model=str(model_dir), dataset=str(data), output=str(out), max_steps=1, batch_size=2,
        report_to="none", bf16="false", logging_steps=1, save_steps=1000, **options,
    )
    train(cfg)
    return json.loads((out / "mask_stats.json").read_text())


def test_the_same_records_train_the_same_masks_from_every_container(tmp_path, tiny_model_dir):
    records = _records("openai", 6)
    prints = {c: _train(tiny_model_dir, _write(records, tmp_path / c, c), tmp_path / f"run-{c}", mask_strategy="moderate")["mask_fingerprint"] for c in CONTAINERS}
    assert len(set(prints.values())) == 1, prints


@pytest.mark.parametrize("layout", ["sharegpt", "tools", "prompt-completion"])
def test_sharegpt_tool_calling_and_prompt_completion_files_train_end_to_end(tmp_path, layout, tiny_model_dir, qwen_model_dir):
    model_dir = qwen_model_dir if layout == "tools" else tiny_model_dir
    stats = _train(model_dir, _write(_records(layout, 4), tmp_path, "jsonl"), tmp_path / "run")
    assert stats["examples"] == 4 and stats["trained_tokens"] > 0 and not stats["skipped"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 1 and 0 < metrics["loss"][0][1] < 100


def _image_records(ref: str) -> list[dict]:
    content = [{"type": "text", "text": "Read it."}, {"type": "image_url", "image_url": {"url": ref}}]
    return [{"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": '{"total": "1.00"}'}]}]


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory, qwen2_vl) -> Path:
    model, processor = qwen2_vl
    folder = tmp_path_factory.mktemp("vlm")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_every_command_refuses_the_same_image_paths_with_the_same_message(tmp_path, vlm_dir):
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "link.png").symlink_to(outside)
    cases = {
        "absolute": (str(outside), "leaves the dataset folder"),
        "dotdot": ("../outside.png", "leaves the dataset folder"),
        "symlink": ("link.png", "leaves the dataset folder"),
        "remote": ("https://example.com/r.png", "refused; pass --allow-remote-images"),
    }
    runner = CliRunner()
    for name, (ref, reason) in cases.items():
        data = data_dir / f"{name}.jsonl"
        data.write_text(json.dumps(_image_records(ref)[0]) + "\n", encoding="utf-8")
        flag = "--allow-remote-images" if name == "remote" else "--allow-outside-paths"
        expected = f"{data}:1, image 0:"
        commands = {
            "inspect-masks": ["inspect-masks", "--dataset", str(data), "--base-model", str(vlm_dir), "--mask-strategy", "none"],
            "validate-data": ["validate-data", str(data), "--base-model", str(vlm_dir)],
            "train-vision": ["train-vision", "--dataset", str(data), "--base-model", str(vlm_dir), "--output", str(tmp_path / "o"), "--max-steps", "1"],
            "predict": ["predict", "--model", str(vlm_dir), "--dataset", str(data), "--out", str(tmp_path / "p.jsonl"), "--no-constrained"],
        }
        for command, args in commands.items():
            result = runner.invoke(app, args)
            output = " ".join(result.output.split())  # rich wraps long lines
            assert result.exit_code in (1, 2), (name, command, result.output)
            assert expected in output and reason in output and flag in output, (name, command, result.output)
            assert "Traceback" not in result.output
        assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "o").exists()
