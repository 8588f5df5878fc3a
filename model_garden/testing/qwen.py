"""A Qwen2.5 tokenizer built offline from the BPE ranks shipped in the ``dashscope`` wheel.

Qwen2.5 (and Qwen2-VL / Qwen2.5-VL) use Qwen's byte-level BPE: 151,643 ranked byte
strings (``qwen.tiktoken``, one ``base64-token rank`` per line), the Qwen2 pre-tokenizer
regex, NFC normalisation, then special tokens from id 151643 on. ``dashscope`` ships the
ranks file, so the tokenizer can be rebuilt without the hub: transformers'
``TikTokenConverter`` derives the merges from the ranks (we only supply the file reader,
so the ``tiktoken`` package is not needed) and ``Qwen2Tokenizer`` adds the regex, the
normaliser and the byte-level decoder exactly as it does for the real checkpoint.

Try it: ``python -m model_garden.testing.qwen``
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

from model_garden.testing.cache import cached_build

# Qwen2.5-VL's chat template (also right for text-only chats): ChatML, a default system
# prompt when none is given, content as a string or a list of text/image/video parts.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Ids 151643.. in Qwen2.5-VL's order; <|endoftext|> comes first (Qwen2Tokenizer adds it).
SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added but not special in Qwen2.5 (they survive skip_special_tokens).
EXTRA_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
VOCAB_SIZE = 151936  # the embedding rows of Qwen2-VL / Qwen2.5-VL checkpoints


def ranks_file() -> Path:
    """``qwen.tiktoken`` inside the installed ``dashscope`` wheel."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the Qwen test tokenizer needs the 'dashscope' wheel: pip install dashscope")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed dashscope wheel")
    return path


def load_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken ranks file: ``base64(token) rank`` per line."""
    ranks = {}
    for line in Path(path).read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _build(folder: Path) -> None:
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        load_tiktoken_bpe = staticmethod(load_ranks)

    path = str(ranks_file())
    vocab, merges = _Converter(vocab_file=path).extract_vocab_merges_from_model(path)
    # <|endoftext|> must be added first (id 151643), so eos moves to <|im_end|> afterwards.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tok.eos_token = "<|im_end|>"
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in EXTRA_TOKENS])
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 32768
    tok.save_pretrained(folder)


def qwen_tokenizer() -> Any:
    """Qwen2.5's tokenizer (a fast ``Qwen2Tokenizer``), built offline and cached.

    Byte-level BPE over Qwen's 151,643 ranks, the Qwen2 pre-tokenizer regex, NFC
    normalisation, ``<|endoftext|>`` (151643, pad) ... ``<|video_pad|>`` (151656) as in
    Qwen2.5-VL, ``<|im_end|>`` as eos, and Qwen2.5-VL's ChatML template (default system
    prompt ``You are a helpful assistant.``, image/video parts). A new object each call.
    """
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(cached_build("qwen2.5-tokenizer", _build))


if __name__ == "__main__":
    tok = qwen_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": "Hello world"}], tokenize=False, add_generation_prompt=True)
    print(repr(text))
    print(tok(text)["input_ids"])
