"""A chat normalised for one template: the messages the template reads, the same with
every text piece replaced by a sentinel, and per piece its role and whether it is trained.

``normalize`` turns any supported message layout (string or typed-part content, images
and videos, tool calls and tool results, per-message ``weight``) into a ``Conversation``;
``render`` renders it. Try it: ``python -m model_garden.masking.conversation``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from model_garden.masking.strategies import MaskConfig, MaskingError

ROLES = ("system", "user", "assistant", "tool")
SENTINEL = "\ue000{}\ue001"
SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
_IMAGE_TYPES = ("image", "image_url", "input_image")
_VIDEO_TYPES = ("video", "video_url")
_TEXT_TYPES = ("text", "input_text", "output_text")


@dataclass
class Conversation:
    """A chat normalised for one template.

    Attributes:
        messages: Template-ready messages holding the real text.
        sentinel_messages: The same with every text piece replaced by its sentinel.
        pieces: The text pieces in conversation order, indexed by sentinel number.
        roles: Per piece, the role of its message.
        trained: Per piece, whether the policy trains it (only assistant pieces can be).
        images: Image references in the order the template meets them.
        videos: Video references likewise.
        tools: Function definitions passed to the template.
        tool_turns: Indices of trained assistant messages holding tool calls: their whole
            rendered body is the reply (the template writes the calls, not the data).
        chat: False for a plain prompt and completion (no template).
    """

    messages: list[dict[str, Any]] = field(default_factory=list)
    sentinel_messages: list[dict[str, Any]] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    trained: list[bool] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_turns: list[int] = field(default_factory=list)
    chat: bool = True

    def add(self, text: str, role: str, trained: bool) -> str:
        """Record a text piece; return its sentinel."""
        self.pieces.append(text)
        self.roles.append(role)
        self.trained.append(trained)
        return SENTINEL.format(len(self.pieces) - 1)


def _parts(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if content is None:
        return []
    if not isinstance(content, list):
        raise MaskingError(f"{where}: content must be a string or a list of parts, not {type(content).__name__}")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in _TEXT_TYPES:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind in _IMAGE_TYPES:
            ref = part.get("image", part.get("image_url"))
            if isinstance(ref, dict):
                ref = ref.get("url")
            parts.append({"type": "image", "ref": ref})
        elif kind in _VIDEO_TYPES:
            ref = part.get("video", part.get("video_url"))
            if isinstance(ref, dict):
                ref = ref.get("url")
            parts.append({"type": "video", "ref": ref})
        else:
            raise MaskingError(f"{where}, part {j}: unsupported content type {kind!r} (text, image_url, image, video)")
    return parts


def normalize(
    messages: list[dict[str, Any]],
    cfg: MaskConfig,
    *,
    multimodal: bool,
    example: str,
    tools: list[dict[str, Any]] | None = None,
    chat: bool = True,
    require_reply: bool = True,
) -> Conversation:
    """Validate OpenAI-style messages and shape them for the template.

    Args:
        messages: ``[{"role", "content"}]``; content a string or a list of parts;
            assistant messages may carry ``tool_calls``.
        cfg: The masking policy (``train_on``).
        multimodal: True for a processor (content stays a list of parts, media allowed);
            False for a text tokenizer (text parts are joined into one string).
        example: How to name this example in errors.
        tools: Function definitions for the template.
        chat: False for a plain prompt and completion (rendered without a template).
        require_reply: Refuse a chat without an assistant turn (training does).

    Returns:
        The normalised conversation.
    """
    if not isinstance(messages, list) or not messages:
        raise MaskingError(f"{example}: 'messages' must be a non-empty list")
    assistant_idx = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"]
    if not assistant_idx and require_reply:
        raise MaskingError(f"{example}: no assistant message to train on")
    conv = Conversation(tools=tools, chat=chat)
    last = assistant_idx[-1] if assistant_idx else -1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            role = msg.get("role") if isinstance(msg, dict) else msg
            raise MaskingError(f"{example}, message {i}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        role, content = msg["role"], msg.get("content")
        trained = role == "assistant" and msg.get("weight", 1) != 0 and (cfg.train_on == "all_assistant" or i == last)
        extra = {k: v for k, v in msg.items() if k != "content" and k != "weight"}
        if trained and msg.get("tool_calls"):
            # The template renders the calls; the whole turn is located by rendering (render_chat).
            conv.tool_turns.append(i)
            trained = False
        elif trained and content is None:
            raise MaskingError(f"{example}, message {i}: the assistant reply is empty")
        if isinstance(content, str) and not multimodal:  # the common case, kept cheap
            if trained and not content.strip():
                raise MaskingError(f"{example}, message {i}: the assistant reply is empty")
            conv.messages.append({**extra, "content": content})
            conv.sentinel_messages.append({**extra, "content": conv.add(content, role, trained)})
            continue
        where = f"{example}, message {i}"
        parts = _parts(content, where)
        media = [p for p in parts if p["type"] != "text"]
        if media and not multimodal:
            raise MaskingError(f"{where}: has {media[0]['type']} content but the model is text-only")
        if media and role == "assistant":
            raise MaskingError(f"{where}: assistant replies must be text")
        if trained and not "".join(p["text"] for p in parts if p["type"] == "text").strip():
            raise MaskingError(f"{where}: the assistant reply is empty")
        real, sent = [], []
        for p in parts:
            if p["type"] == "text":
                real.append({"type": "text", "text": p["text"]})
                sent.append({"type": "text", "text": conv.add(p["text"], role, trained)})
                continue
            (conv.images if p["type"] == "image" else conv.videos).append(p["ref"])
            real.append({"type": p["type"]})
            sent.append({"type": p["type"]})
        if content is None:  # a tool-call turn without text: empty content, which every template can read
            empty: str | list = [] if multimodal else ""
            conv.messages.append({**extra, "content": empty})
            conv.sentinel_messages.append({**extra, "content": empty})
        elif multimodal:
            conv.messages.append({**extra, "content": real})
            conv.sentinel_messages.append({**extra, "content": sent})
        else:
            conv.messages.append({**extra, "content": "".join(p["text"] for p in real)})
            conv.sentinel_messages.append({**extra, "content": "".join(p["text"] for p in sent)})
    if not chat and [m["role"] for m in conv.messages] not in (["user", "assistant"], ["user"]):
        raise MaskingError(f"{example}: a plain prompt and completion must be one user and one assistant text")
    return conv


if __name__ == "__main__":
    conv = normalize(
        [{"role": "user", "content": "Name?"}, {"role": "assistant", "content": '{"name": "Ada"}'}],
        MaskConfig(), multimodal=False, example="demo",
    )
    for piece, role, trained in zip(conv.pieces, conv.roles, conv.trained):
        print(f"{role:10s} {'TRAIN' if trained else '-':6s} {piece!r}")
    print(conv.sentinel_messages)
