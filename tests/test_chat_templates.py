"""``--chat-template``: a named or file template renders the chats, is saved with the
run, and predict renders its prompts with it; the shared tokenizer is never changed.

Run: ``.venv/bin/python -m pytest tests/test_chat_templates.py -q``
"""

from __future__ import annotations

import json

import pytest
import yaml

from model_garden.data.sample import DataError
from model_garden.masking.templates import resolve_chat_template, with_chat_template
from model_garden.training.run import train
from test_training import _cfg

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def _tool_data(tmp_path):
    rows = [
        {"tools": TOOLS, "messages": [
            {"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
            {"role": "tool", "content": json.dumps({"celsius": t})},
            {"role": "assistant", "content": f"{t} degrees in {city}."}]}
        for city, t in (("Paris", 21), ("Lyon", 18))
    ]
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_names_files_and_unknown_names(tmp_path, smollm2_tokenizer):
    assert "<tool_call>" in resolve_chat_template("chatml")
    assert "<|start_header_id|>" in resolve_chat_template("llama3")  # one of TRL's
    own = tmp_path / "t.jinja"
    own.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert resolve_chat_template(str(own)) == own.read_text()
    with pytest.raises(ValueError, match=r"--chat-template 'chatmI': not a file, nor a known template name \(chatml, "):
        resolve_chat_template("chatmI")
    copy = with_chat_template(smollm2_tokenizer, "chatml")
    assert copy.chat_template != smollm2_tokenizer.chat_template and "<tool_call>" not in smollm2_tokenizer.chat_template


@pytest.mark.integration
def test_a_tool_calling_set_trains_with_a_tool_capable_template_and_predict_renders_with_it(tmp_path, tiny_model_dir):
    """SmolLM2's own template renders no tool calls; --chat-template chatml does, the run
    keeps it, and predict on the run renders its prompts with it."""
    from model_garden.data.sources import open_source
    from model_garden.inference.loading import load_for_inference
    from model_garden.inference.predict import predict
    from model_garden.masking.codec import ChatCodec

    data = _tool_data(tmp_path)
    common = dict(batch_size=2, max_steps=1, mask_strategy="none", structural_weight=1.0)
    with pytest.raises(DataError, match=r"tools.jsonl:1, message 1: the chat template renders no tool calls"):
        train(_cfg(tiny_model_dir, data, tmp_path / "refused", **common))
    run = tmp_path / "run"
    result = train(_cfg(tiny_model_dir, data, run, chat_template="chatml", **common))
    assert result.metrics["steps"] == 1
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["chat_template"] == "chatml"
    _, processing = load_for_inference(run)
    assert processing.chat_template == resolve_chat_template("chatml")
    sample = open_source(data, require_reply=False).sample(0)
    prompt, _ = ChatCodec.for_data(processing, data).prompt_text(sample)
    assert "# Tools" in prompt and '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    predict(run, data, tmp_path / "preds.jsonl", constrained=False, max_new_tokens=3)
    assert len((tmp_path / "preds.jsonl").read_text().splitlines()) == 2
