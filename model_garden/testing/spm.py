"""A SentencePiece tokenizer (Llama-2 / Mistral family) trained offline on generated text.

SentencePiece tokenizers differ from byte-level BPE in ways that break naive masking:
spaces become ``▁`` and attach to the *next* word (``"▁{"``), a ``▁`` is prepended to
the text, and characters outside the vocabulary fall back to byte tokens
(``<0xF0><0x9F>...``). This module trains a small BPE model with ``sentencepiece`` the
way Llama's was configured (identity normalisation, byte fallback, split digits, no
whitespace collapsing) on a few thousand generated English, French and JSON lines,
converts it with transformers' ``LlamaTokenizer`` and gives it Llama-2's chat template.

Try it: ``python -m model_garden.testing.spm``
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from model_garden.testing.cache import cached_build

# Llama-2's chat format: [INST] user [/INST] reply </s>, system prompt inside <<SYS>>.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system_message = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system_message = false %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

VOCAB_SIZE = 1000

_WORDS_EN = (
    "the invoice total date address company receipt store amount paid cash change tax item price quantity "
    "please extract fields from this document and answer in json the customer name phone number email "
    "a an of to in for on with at by from is was are be this that it as or and not no yes"
).split()
_WORDS_FR = (
    "la facture montant date adresse société reçu magasin payé espèces monnaie taxe article prix quantité "
    "veuillez extraire les champs de ce document et répondre en json le client nom téléphone courriel "
    "une des du au pour sur avec par est était sont être ce cette il elle où déjà très garçon français"
).split()
_KEYS = ("company", "date", "address", "total", "Marque", "contents", "confidence_score", "items", "name", "price")


def corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic training text: English and French sentences and JSON documents."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        kind = i % 4
        if kind == 0:
            words = [rng.choice(_WORDS_EN) for _ in range(rng.randint(4, 14))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ":"]))
        elif kind == 1:
            words = [rng.choice(_WORDS_FR) for _ in range(rng.randint(4, 14))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", " ?", " !", " :"]))
        elif kind == 2:
            words = [rng.choice(_WORDS_EN) for _ in range(rng.randint(3, 8))]
            lines.append(f"[INST] {' '.join(words)} [/INST] [{rng.randint(0, 99)}, {rng.random():.3g}, \"{rng.choice(_WORDS_FR)}\"]")
        else:
            doc = {k: rng.choice([rng.randint(-999, 99999), round(rng.uniform(0, 500), 2), " ".join(rng.choices(_WORDS_EN + _WORDS_FR, k=3)), None, True, False])
                   for k in rng.sample(_KEYS, rng.randint(1, 5))}
            lines.append(json.dumps(doc, ensure_ascii=False, indent=rng.choice([None, 2])).replace("\n", " "))
    return lines


def _build(folder: Path) -> None:
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    text = folder / "corpus.txt"
    text.write_text("\n".join(corpus()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(folder / "tokenizer"),
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    text.unlink()
    (folder / "tokenizer.vocab").unlink()
    tok = LlamaTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(folder)


def sentencepiece_tokenizer() -> Any:
    """A fast Llama-style tokenizer converted from a SentencePiece BPE model trained here.

    1,000 pieces with ``▁`` word boundaries and byte fallback (any character encodes),
    ``<s>``/``</s>``/``<unk>``, and Llama-2's ``[INST] ... [/INST] reply </s>`` chat
    template. Trained once (a few seconds) and cached; a new object each call.
    """
    from transformers import LlamaTokenizer

    return LlamaTokenizer.from_pretrained(cached_build("spm-llama-tokenizer", _build))


if __name__ == "__main__":
    tok = sentencepiece_tokenizer()
    chat = [{"role": "user", "content": "Extract: déjà 42 😀"}, {"role": "assistant", "content": '{"total": 42}'}]
    text = tok.apply_chat_template(chat, tokenize=False)
    print(repr(text))
    print(tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"]))
