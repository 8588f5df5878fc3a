"""The loss-mask engine with vision-language processors (tiny Qwen2-VL, Qwen2.5-VL,
Idefics3): image and video placeholders are never trained and reply spans stay exact
after the processor expands them.

Run: ``python -m pytest tests/test_masking_vision.py -q``
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model_garden.masking import TOKEN_CLASS_NAMES, MaskConfig, build_example
from model_garden.testing import tiny_idefics3, tiny_qwen2_vl

MEDIA = next(code for code, name in TOKEN_CLASS_NAMES.items() if name == "media")
REPLY_1 = '{"total": "9.00", "paid": true}'
REPLY_2 = '{"date": "25/12/2018"}'
# What the trained tokens of a reply decode to: Idefics3's "Assistant:" header is followed
# by a space that merges into the reply's first token.
EXPECTED = {
    "qwen2-vl": lambda r: r + "<|im_end|>",
    "qwen2.5-vl": lambda r: r + "<|im_end|>",
    "idefics3": lambda r: " " + r + "<end_of_utterance>",
}


@pytest.fixture(scope="module", params=["qwen2-vl", "qwen2.5-vl", "idefics3"])
def vlm(request):
    build = {"qwen2-vl": lambda: tiny_qwen2_vl("2"), "qwen2.5-vl": lambda: tiny_qwen2_vl("2.5"), "idefics3": tiny_idefics3}
    model, processor = build[request.param]()
    return request.param, model, processor


def image(color: str, size=(64, 64)) -> Image.Image:
    return Image.new("RGB", size, color)


def chat() -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image", "image": image("red")}, {"type": "image", "image": image("blue", (80, 48))}, {"type": "text", "text": "Total?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": REPLY_1}]},
        {"role": "user", "content": [{"type": "text", "text": "And the date?"}, {"type": "image", "image": image("green")}]},
        {"role": "assistant", "content": [{"type": "text", "text": REPLY_2}]},
    ]


def media_ids(processor) -> set[int]:
    tok = processor.tokenizer
    names = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<image>", "<fake_token_around_image>", "<global-img>"]
    return {i for i in tok.convert_tokens_to_ids(names) if i is not None and i != tok.unk_token_id}


def trained_text(processor, ex) -> str:
    return processor.tokenizer.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100])


@pytest.mark.parametrize("strategy", ["none", "aggressive"])
def test_media_masked_and_replies_exact(vlm, strategy):
    name, _, processor = vlm
    ex = build_example(processor, chat(), MaskConfig(strategy=strategy, structural_weight=0.5))
    ids, labels, classes = np.asarray(ex["input_ids"]), np.asarray(ex["labels"]), ex["token_classes"]
    pads = np.isin(ids, [processor.image_token_id])
    # Qwen: 64x64 -> 56x56 (4 tokens), 80x48 -> 84x56 (6); Idefics3: one 32x32 global image (4) each.
    assert pads.sum() == {"qwen2-vl": 14, "qwen2.5-vl": 14, "idefics3": 12}[name]
    assert (classes[pads] == MEDIA).all() and (labels[pads] == -100).all()
    assert (labels[np.isin(ids, list(media_ids(processor)))] == -100).all()
    assert (np.asarray(ex["loss_weights"])[classes == MEDIA] == 0).all()
    if strategy == "none":
        assert trained_text(processor, ex) == EXPECTED[name](REPLY_1) + EXPECTED[name](REPLY_2)


def test_training_tokens_are_the_processors(vlm):
    name, _, processor = vlm
    messages = chat()
    ex = build_example(processor, messages, MaskConfig(train_on="last_assistant"))
    text = processor.apply_chat_template(messages, tokenize=False)
    images = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
    plain = processor(text=[text], images=images, add_special_tokens=False)
    assert ex["input_ids"] == list(plain["input_ids"][0])
    assert trained_text(processor, ex) == EXPECTED[name](REPLY_2)


def test_built_example_trains_the_model(vlm):
    _, model, processor = vlm
    ex = build_example(processor, chat(), MaskConfig(strategy="conservative"))
    tensors = {k: v for k, v in ex.items() if isinstance(v, torch.Tensor)}
    if "mm_token_type_ids" in ex:
        assert len(ex["mm_token_type_ids"]) == len(ex["input_ids"])
        tensors["mm_token_type_ids"] = torch.tensor([ex["mm_token_type_ids"]])
    out = model(input_ids=torch.tensor([ex["input_ids"]]), labels=torch.tensor([ex["labels"]]), **tensors)
    out.loss.backward()
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("version", ["2", "2.5"])
def test_qwen_video_placeholders_masked(version):
    _, processor = tiny_qwen2_vl(version)
    frames = [image(c, (64, 48)) for c in ("red", "green", "blue", "white")]
    messages = [
        {"role": "user", "content": [{"type": "video", "video": frames}, {"type": "text", "text": "When does it turn blue?"}]},
        {"role": "assistant", "content": '{"start": 1.0, "end": 2.0}'},
    ]
    ex = build_example(processor, messages, MaskConfig())
    ids, labels = np.asarray(ex["input_ids"]), np.asarray(ex["labels"])
    video = ids == processor.video_token_id
    assert video.sum() == 8  # 4 frames: 2 temporal patches x 2x2 merged patches
    assert (labels[video] == -100).all() and (ex["token_classes"][video] == MEDIA).all()
    assert trained_text(processor, ex) == '{"start": 1.0, "end": 2.0}<|im_end|>'
    assert ex["video_grid_thw"].tolist() == [[2, 4, 4]]
