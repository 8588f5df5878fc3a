"""Tiny randomly initialised models (and their processors) for hermetic tests.

Every factory builds from a config, seeded, so the same call gives the same weights, and
returns new objects each call (tests may train or mutate them). Sizes are chosen so a
forward and backward pass on a short chat with a 64x64 image takes well under a second
on one CPU core; the vocabularies are the real ones, so masks and decoding are realistic.

Try it: ``python -m model_garden.testing.models``
"""

from __future__ import annotations

from typing import Any

from model_garden.testing.qwen import CHAT_TEMPLATE as QWEN_CHAT_TEMPLATE
from model_garden.testing.qwen import VOCAB_SIZE as QWEN_VOCAB_SIZE
from model_garden.testing.qwen import qwen_tokenizer

# Idefics3's chat template (SmolVLM's is the same after "<|im_start|>"): "User:<image>..."
# and "Assistant: reply<end_of_utterance>"; content must be a list of parts.
IDEFICS3_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]

_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _seeded(build: Any, seed: int) -> Any:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def padded_vocab(n: int, multiple: int = 64) -> int:
    """Embedding rows for ``n`` tokens, rounded up as real checkpoints do."""
    return -(-n // multiple) * multiple


def tiny_text_model(tokenizer: Any, seed: int = 0) -> Any:
    """A random ``LlamaForCausalLM`` (hidden 64, 2 layers, tied embeddings) whose
    vocabulary fits ``tokenizer`` (``len(tokenizer)`` rounded up to 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=padded_vocab(len(tokenizer)),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_TEXT,
    )
    return _seeded(lambda: LlamaForCausalLM(config), seed)


def tiny_qwen2_vl(version: str = "2", seed: int = 0) -> tuple[Any, Any]:
    """A random Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``) and its processor.

    The model: a 2-layer vision tower (patch 14, merge 2, temporal patch 2; Qwen2.5-VL's
    with windowed attention in the first block) and a 2-layer text model (hidden 64,
    M-RoPE) over the real 151,936-row Qwen vocabulary. The processor: the Qwen tokenizer
    (``qwen_tokenizer``), ``Qwen2VLImageProcessorPil`` with 4 to 16 tokens per image (a
    64x64 image becomes 56x56: 16 patches, 4 ``<|image_pad|>`` tokens), and
    ``QwenVideoProcessorPil`` (frames in, 4 to 16 tokens per pair of frames).
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from model_garden.vision_compat import QwenVideoProcessorPil, export_video_processor_mixin

    if version not in ("2", "2.5"):
        raise ValueError(f"version must be '2' or '2.5', not {version!r}")
    text = dict(
        vocab_size=QWEN_VOCAB_SIZE,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        **_TEXT,
    )
    vision = dict(depth=2, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if version == "2":
        config = Qwen2VLConfig(text_config=text, vision_config={**vision, "embed_dim": 32, "hidden_size": 64})
        model_cls, processor_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    else:
        vision.update(hidden_size=32, intermediate_size=64, out_hidden_size=64, window_size=56, fullatt_block_indexes=[1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision)
        model_cls, processor_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    pixels = dict(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    export_video_processor_mixin()
    processor = processor_cls(
        image_processor=Qwen2VLImageProcessorPil(**pixels),
        tokenizer=qwen_tokenizer(),
        video_processor=QwenVideoProcessorPil(**pixels),
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return _seeded(lambda: model_cls(config), seed), processor


def tiny_idefics3(seed: int = 0) -> tuple[Any, Any]:
    """A random ``Idefics3ForConditionalGeneration`` and an ``Idefics3Processor``.

    SmolLM2's tokenizer (``load_processing("smollm2-135m")``) with ``<image>``,
    ``<fake_token_around_image>``, ``<global-img>`` and ``<end_of_utterance>`` added;
    ``Idefics3ImageProcessorPil`` resizing every image to one 32x32 global image (no
    splitting), 4 ``<image>`` tokens each; Idefics3's ``User:``/``Assistant:`` template.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from model_garden.models import load_processing

    tokenizer = load_processing("smollm2-135m", vision=False)
    tokenizer.add_special_tokens({"additional_special_tokens": IDEFICS3_TOKENS})
    # 32x32 global image, 8x8 patches, pixel shuffle 2: (32 / 8) ** 2 / 2 ** 2 = 4 image tokens.
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    config = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=padded_vocab(len(tokenizer)), max_position_embeddings=4096, tie_word_embeddings=True, **_TEXT),
        scale_factor=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4, chat_template=IDEFICS3_CHAT_TEMPLATE
    )
    return _seeded(lambda: Idefics3ForConditionalGeneration(config), seed), processor


if __name__ == "__main__":
    import time

    for name, build in (("qwen2-vl", lambda: tiny_qwen2_vl("2")), ("qwen2.5-vl", lambda: tiny_qwen2_vl("2.5")), ("idefics3", tiny_idefics3)):
        start = time.perf_counter()
        model, processor = build()
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:11s} {n / 1e6:5.1f}M parameters, built in {time.perf_counter() - start:.1f}s")
