"""The one JSON layout model-garden writes answers in and constrains decoding to.

Training targets and the decoding grammar must agree on separators, or constrained
decoding forbids the very layout the model learned. This is ``json.dumps``'s default
layout (``", "`` and ``": "``, one line), with non-ASCII characters kept as they are.
"""

from __future__ import annotations

import json
from typing import Any

ITEM_SEPARATOR = ", "
KEY_SEPARATOR = ": "


def dumps(obj: Any) -> str:
    """Serialise an answer the way training targets and the grammar expect."""
    return json.dumps(obj, ensure_ascii=False, separators=(ITEM_SEPARATOR, KEY_SEPARATOR))
