"""``Sample``: one example, whatever format it came in, and the conversion into it.

Every reader (JSONL lines, Hugging Face ``datasets`` rows) hands a plain record to
``to_sample``, which recognises the layouts TRL, Axolotl and OpenAI users bring:

* ``{"messages": [...]}``: OpenAI chat / TRL conversational; content a string or a list
  of parts (``text``, ``image_url``, ``image``, ``video``); optional ``tools``;
* ``{"prompt": ..., "completion": ...}``: TRL prompt-completion. Conversational (two
  lists of messages): only the completion is trained. Standard (two strings): no chat
  template; the text is ``prompt + completion + EOS`` and the completion and its EOS are
  trained, as TRL's ``completion_only_loss``;
* ``{"conversations": [{"from": "human", "value": ...}, ...]}``: ShareGPT, with Axolotl's
  role names (``human``/``gpt``/``system``/``tool``; ``role``/``content`` keys work too).

Tool use: a record's ``tools`` (a list, or its JSON text as TRL stores it) reach the chat
template; an assistant turn may hold only ``tool_calls`` (OpenAI's ``arguments`` JSON text
becomes the object chat templates expect) and is trained like any reply; ``tool`` results
are prompt. TRL's vision layout works: an ``images`` column fills the ``{"type": "image"}``
parts in order. Keys whose value is null are dropped, so a record read from an Arrow table
(which fills every missing key with null) equals the same record read from JSONL.

Try it: ``python -m model_garden.data.sample '{"prompt": "2+2=", "completion": "4"}'``
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
# Axolotl's default ShareGPT role names, and the OpenAI ones.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function_response": "tool",
}
# The record key that names the text a reply's values come from (``Sample.source_text``).
SOURCE_FIELD = "source"
MEDIA_PARTS = ("image", "image_url", "video")  # content part types that carry a picture, not text
LAYOUTS = "'messages', 'prompt' + 'completion', or ShareGPT 'conversations'"


class DataError(ValueError):
    """A record is unusable; the message names the file and line (or row), ``line`` holds
    the number when there is one."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


@dataclass
class Sample:
    """One example.

    Attributes:
        messages: OpenAI-style messages (``role``, ``content``; ``tool_calls`` on assistant
            turns; a message with ``"weight": 0`` is never trained).
        tools: Function definitions for the chat template, if any.
        schema: The reply JSON schema the record carries (its ``schema`` key), if any.
        where: How messages name the record (``file:line`` or ``folder row N``).
        line: Its 1-based line (JSONL) or row (tables): the key predictions are filed under.
        chat: False for TRL's standard prompt-completion: no chat template is applied.
        processor_kwargs: Extra processor arguments (a video's ``video_metadata``).
        meta: The record's other keys (``id``, ...).
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    schema: dict[str, Any] | None = None
    where: str = "example"
    line: int | None = None
    chat: bool = True
    processor_kwargs: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def reply(self) -> str:
        """The text of the last assistant message (its tool calls as JSON if it has no text)."""
        for msg in reversed(self.messages):
            if msg.get("role") == "assistant":
                content = msg.get("content")
                if isinstance(content, list):
                    content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
                if not content and msg.get("tool_calls"):
                    return json.dumps(msg["tool_calls"], ensure_ascii=False)
                return content or ""
        return ""

    def source_text(self, field: str = SOURCE_FIELD) -> str | None:
        """The text the reply's values are taken from (grounded decoding copies only spans
        of it): the record's ``field`` key when it holds a string (``make-data sroie``
        writes the OCR text there, so that the instructions and the schema pasted into the
        prompt are no source), else the text of the user turns joined by line breaks;
        ``None`` when there is none (an image-only prompt)."""
        own = self.meta.get(field)
        if isinstance(own, str):
            return own
        texts = []
        for msg in self.messages:
            if msg.get("role") != "user":
                continue
            content = msg.get("content")
            parts = [content] if isinstance(content, str) else [p.get("text") for p in content or [] if isinstance(p, dict)]
            texts += [t for t in parts if isinstance(t, str) and t]
        return "\n".join(texts) or None

    def document_text(self, field: str = SOURCE_FIELD) -> str | None:
        """``source_text`` where it holds the document the gold was read from; ``None``
        when the record names no ``field`` and its user turns carry an image or a video:
        then the document is the picture, and the prompt's text (instructions) says
        nothing about which values it contains."""
        if isinstance(self.meta.get(field), str):
            return self.meta[field]
        media = any(
            isinstance(p, dict) and p.get("type") in MEDIA_PARTS
            for msg in self.messages if msg.get("role") == "user" and isinstance(msg.get("content"), list)
            for p in msg["content"]
        )
        return None if media else self.source_text(field)


def _drop_none(value: Any) -> Any:
    """``value`` without null-valued keys, at every depth."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, list):
        raise DataError(f"{where}: 'tool_calls' must be a list")
    out = []
    for k, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise DataError(f"{where}: tool call {k} needs a function name")
        args = fn.get("arguments", {})
        if isinstance(args, str):  # OpenAI sends JSON text; chat templates render an object
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: tool call {k} arguments are not JSON ({exc.msg})") from None
        # Arguments keep their nulls: there they are values, not missing keys.
        out.append({**_drop_none({k2: v for k2, v in call.items() if k2 != "function"}), "type": "function",
                    "function": {**_drop_none({k2: v for k2, v in fn.items() if k2 != "arguments"}), "arguments": args}})
    return out


def _message(msg: Any, i: int, where: str, role_names: dict[str, str] | None = None) -> dict[str, Any]:
    if not isinstance(msg, dict):
        raise DataError(f"{where}: message {i} must be an object, not {type(msg).__name__}")
    if role_names is not None:  # ShareGPT
        role = msg.get("from", msg.get("role"))
        content = msg.get("value", msg.get("content"))
        if role not in role_names:
            raise DataError(f"{where}: message {i} has unknown role {role!r} (expected {', '.join(role_names)})")
        msg = {"role": role_names[role], "content": content, **{k: v for k, v in msg.items() if k not in ("from", "value", "role", "content")}}
    calls = msg.get("tool_calls")
    out = _drop_none({k: v for k, v in msg.items() if k != "tool_calls"})
    role = out.get("role")
    if role not in ROLES:
        raise DataError(f"{where}: message {i} has unknown role {role!r} (expected {', '.join(ROLES)})")
    content = out.get("content")
    if calls is not None and calls != []:
        if role != "assistant":
            raise DataError(f"{where}: message {i}: only assistant messages make tool calls")
        out["tool_calls"] = _tool_calls(calls, f"{where}: message {i}")
    elif role == "assistant" and not isinstance(content, (str, list)):
        raise DataError(f"{where}: message {i} content must be a string or a list of parts")
    if content is not None and not isinstance(content, (str, list)):
        raise DataError(f"{where}: message {i} content must be a string or a list of parts")
    return out


def _fill_images(messages: list[dict[str, Any]], images: Any, where: str) -> None:
    """TRL's vision layout: ``{"type": "image"}`` parts take the ``images`` column in order."""
    pending = list(images or [])
    for msg in messages:
        for part in msg.get("content") if isinstance(msg.get("content"), list) else []:
            if isinstance(part, dict) and part.get("type") == "image" and "image" not in part and "image_url" not in part:
                if not pending:
                    raise DataError(f"{where}: more image parts than entries in 'images'")
                part["image"] = pending.pop(0)
    if pending:
        raise DataError(f"{where}: {len(pending)} entries of 'images' have no image part to go to")


def _tools(value: Any, where: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if isinstance(value, str):  # TRL stores tools as JSON text in Arrow tables
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: 'tools' is not JSON ({exc.msg})") from None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise DataError(f"{where}: 'tools' must be a list of function definitions")
    return _drop_none(value) or None


def to_sample(record: Any, where: str, *, line: int | None = None, require_reply: bool = True) -> Sample:
    """Convert one record of any supported layout (see the module docstring).

    Args:
        record: The parsed record (a dict).
        where: How errors name it (``file:line``).
        line: Its 1-based line or row number (kept on errors too).
        require_reply: Refuse a record without an assistant turn (training and scoring
            need one; prediction does not).

    Raises:
        DataError: naming ``where`` and the problem.
    """
    try:
        return _to_sample(record, where, line, require_reply)
    except DataError as exc:
        exc.line = line
        raise


def _to_sample(record: Any, where: str, line: int | None, require_reply: bool) -> Sample:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with {LAYOUTS}")
    record = dict(record)
    chat, role_names = True, None
    if record.get("messages") is not None:
        raw = record.pop("messages")
    elif record.get("conversations") is not None:
        raw, role_names = record.pop("conversations"), SHAREGPT_ROLES
    elif record.get("prompt") is not None and "completion" in record:
        prompt, completion = record.pop("prompt"), record.pop("completion")
        if isinstance(prompt, str) and isinstance(completion, str):
            chat = False
            raw = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        elif isinstance(prompt, list) and isinstance(completion, list):
            # Only the completion is trained: the prompt's own assistant turns are context.
            raw = [{**m, "weight": 0} if isinstance(m, dict) and m.get("role") == "assistant" else m for m in prompt] + completion
        else:
            raise DataError(f"{where}: 'prompt' and 'completion' must both be strings or both lists of messages")
    else:
        raise DataError(f"{where}: expected an object with {LAYOUTS}; found keys {sorted(record)[:8]}")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: the messages must be a non-empty list")
    messages = [_message(m, i, where, role_names) for i, m in enumerate(raw)]
    if require_reply and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: no assistant message")
    if "images" in record:
        _fill_images(messages, record.pop("images"), where)
    tools = _tools(record.pop("tools", None), where)
    schema = record.pop("schema", None)
    return Sample(
        messages=messages,
        tools=tools,
        schema=schema if isinstance(schema, dict) else None,
        where=where,
        line=line,
        chat=chat,
        meta={k: v for k, v in record.items() if v is not None},
    )


if __name__ == "__main__":
    print(to_sample(json.loads(sys.argv[1]), "argv"))
