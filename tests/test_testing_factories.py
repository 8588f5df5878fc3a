"""The offline test factories build what they say: real tokenizer behaviour, tiny models
that train. Run: ``python -m pytest tests/test_testing_factories.py -q``"""

from __future__ import annotations

import math

import pytest
import regex
import torch
from PIL import Image

from model_garden.testing import (
    qwen_tokenizer,
    sentencepiece_tokenizer,
    tiny_idefics3,
    tiny_qwen2_vl,
    tiny_text_model,
)
from model_garden.testing.qwen import load_ranks, ranks_file

QWEN_REGEX = regex.compile(
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@pytest.fixture(scope="module")
def qwen():
    return qwen_tokenizer()


@pytest.fixture(scope="module")
def spm():
    return sentencepiece_tokenizer()


@pytest.fixture(scope="module")
def ranks():
    return load_ranks(ranks_file())


def tiktoken_encode(text: str, ranks: dict[bytes, int]) -> list[int]:
    """tiktoken's algorithm: split with the regex, then merge the lowest-ranked pair."""
    ids = []
    for piece in QWEN_REGEX.findall(text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while len(parts) > 1:
            pairs = [(ranks.get(a + b, math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, i = min(pairs)
            if rank == math.inf:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids += [ranks[p] for p in parts]
    return ids


def test_qwen_hello_world_ids(qwen, ranks):
    ids = qwen("Hello world", add_special_tokens=False)["input_ids"]
    assert ids == [9707, 1879]  # Qwen2.5's ids, as published in its tokenizer
    assert ids == [ranks[b"Hello"], ranks[b" world"]]


@pytest.mark.parametrize(
    "text",
    [
        '{"total": "9.00", "date": "25/12/2018"}',
        "  Déjà vu: l'été 2024 — naïve café!\n\n\tTabs",
        "emoji 😀👍🏽 and CJK 中文字符 and 12345678 digits",
        "I'll've we're THEY'RE don't\r\n",
    ],
)
def test_qwen_matches_tiktoken_bpe(qwen, ranks, text):
    assert qwen(text, add_special_tokens=False)["input_ids"] == tiktoken_encode(text, ranks)
    assert qwen.decode(qwen(text)["input_ids"]) == text


def test_qwen_special_tokens(qwen):
    ids = qwen.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|video_pad|>"])
    assert ids == [151643, 151644, 151645, 151652, 151655, 151656]
    assert (qwen.eos_token, qwen.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert len(qwen) == 151665


def test_qwen_chat_template(qwen):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "{}"}]
    text = qwen.apply_chat_template(chat, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n{}<|im_end|>\n"
    )
    parts = [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    text = qwen.apply_chat_template(parts, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_sentencepiece_pieces(spm):
    text = 'Le total: 42 😀 {"a": 1}'
    pieces = spm.convert_ids_to_tokens(spm(text, add_special_tokens=False)["input_ids"])
    assert pieces[0].startswith("▁")  # the dummy prefix
    assert ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"] == pieces[pieces.index("<0xF0>") : pieces.index("<0xF0>") + 4]
    assert "4" in pieces and "2" in pieces and "42" not in pieces  # split digits
    assert spm.decode(spm(text, add_special_tokens=False)["input_ids"]) == text


def test_sentencepiece_chat_template(spm):
    chat = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    text = spm.apply_chat_template(chat, tokenize=False)
    assert text == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST] A2 </s>"


def _train_step(model, **inputs) -> float:
    out = model(**inputs)
    out.loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    return out.loss.item()


def test_tiny_text_model(spm):
    model = tiny_text_model(spm)
    assert model.config.vocab_size >= len(spm) and model.config.vocab_size % 64 == 0
    ids = torch.tensor([spm("Bonjour le monde")["input_ids"]])
    assert math.isfinite(_train_step(model, input_ids=ids, labels=ids))
    again = tiny_text_model(spm)
    assert again is not model
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)  # seeded


@pytest.mark.parametrize("version", ["2", "2.5"])
def test_tiny_qwen2_vl_image_and_video(version):
    model, processor = tiny_qwen2_vl(version)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Total?"}]}]
    text = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 64), "red")], return_tensors="pt")
    assert inputs["input_ids"][0].tolist().count(processor.image_token_id) == 4  # 56x56: 4x4 patches, merged 2x2
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert math.isfinite(_train_step(model, **inputs, labels=inputs["input_ids"]))

    frames = [Image.new("RGB", (64, 48), (60 * i, 0, 0)) for i in range(3)]
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When?"}]}]
    text = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], videos=[frames], return_tensors="pt")
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]]  # 3 frames padded to 4, pairs of frames
    assert inputs["input_ids"][0].tolist().count(processor.video_token_id) == 8
    assert math.isfinite(_train_step(model, **inputs, labels=inputs["input_ids"]))


def test_tiny_idefics3():
    model, processor = tiny_idefics3()
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Total?"}]}]
    text = processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == "User:<image>Total?<end_of_utterance>\nAssistant:"
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 48), "blue")], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(processor.image_token_id) == 4
    assert math.isfinite(_train_step(model, **inputs, labels=inputs["input_ids"]))
