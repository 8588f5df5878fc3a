"""The ``schema-forced`` strategy: mask exactly the reply tokens the decoding grammar forces.

At inference, constrained decoding supplies every token the grammar leaves no choice
about (the only token allowed at that point). Training on those tokens spends capacity on
what decoding provides anyway. This walks the reply's own training tokens through the
same grammar as constrained decoding (``model_garden.grammar``) and marks a token *forced* when the
grammar allowed nothing else before it. Decisions that look structural but are not (how
many items an array gets, ``null`` versus a string, whether an optional key appears, where
a string ends) allow several tokens and keep their loss.

A reply the grammar rejects (prose around the JSON, another layout, a value outside the
schema) cannot be judged; the caller trains it whole and counts it as a fallback.

Try it: ``python -m model_garden.masking.schema_forced``
"""

from __future__ import annotations

import functools
import json
from typing import Any

import llguidance.numpy
import numpy as np

from model_garden.grammar import matcher


def forced_tokens(tokenizer: Any, schema: dict, reply_ids: list[int]) -> np.ndarray | None:
    """Which reply tokens the grammar forces (cached: a data set is built once per epoch).

    Args:
        tokenizer: The tokenizer the ids come from.
        schema: The JSON schema constrained decoding would use.
        reply_ids: The reply's tokens, exactly as in the training sequence.

    Returns:
        A boolean array over ``reply_ids``, or ``None`` if the grammar rejects the reply.
    """
    forced = _forced(tokenizer, json.dumps(schema, ensure_ascii=False), tuple(reply_ids))
    return None if forced is None else np.array(forced, dtype=bool)


@functools.lru_cache(maxsize=65536)
def _forced(tokenizer: Any, schema_json: str, reply_ids: tuple[int, ...]) -> tuple[bool, ...] | None:
    m = matcher(tokenizer, json.loads(schema_json))
    bitmask = llguidance.numpy.allocate_token_bitmask(1, len(tokenizer))
    forced = np.zeros(len(reply_ids), dtype=bool)
    for i, token in enumerate(reply_ids):
        llguidance.numpy.fill_next_token_bitmask(m, bitmask, 0)
        forced[i] = int(np.bitwise_count(bitmask.view(np.uint32)).sum()) == 1
        if not m.consume_token(token):
            return None
    return tuple(forced.tolist())


if __name__ == "__main__":
    from model_garden.models import load_processing

    tok = load_processing("smollm2-135m")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"]}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    ids = tok('{"name": "John", "age": 30}', add_special_tokens=False)["input_ids"]
    for token, f in zip(ids, forced_tokens(tok, schema, ids)):
        print(f"{tok.decode([token])!r:12} {'forced (masked)' if f else 'trained'}")
