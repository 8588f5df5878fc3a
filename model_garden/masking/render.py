"""Render a chat with the model's own template and locate every reply in the text.

Every text piece of the conversation (system, user and assistant) is replaced by a
unique sentinel (private-use characters no tokenizer merges with the template text) and
that skeleton is rendered; substituting the pieces for the sentinels must reproduce the
real rendering exactly. Then each reply's character span is known exactly, whatever the
template adds around it (a default system prompt, role headers, turn separators). The
skeleton depends only on the chat's shape (roles, media, other keys), so it is rendered
once per shape and template, and a chat costs one rendering. A template that looks at
the prompt's text fails that check; that chat then gets a skeleton of its own, with
sentinels in the replies only. A template that rewrites replies (``| trim``, reasoning
stripping) fails both; the replies are then searched for in the real rendering in
conversation order, and an example whose reply cannot be found is refused with an error
that names it.

Training and inference share this module: ``render_chat`` builds training text,
``render_prompt`` the generation prompt.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from model_garden.masking.conversation import SENTINEL, SENTINEL_RE, Conversation, normalize
from model_garden.masking.strategies import MaskConfig, MaskingError

_PROBE = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say {\"a\": 1}\n"},
    {"role": "assistant", "content": " {\"a\": 1} "},
    {"role": "user", "content": "Again."},
]
_SKELETON_CACHE_SIZE = 4096  # chat shapes kept per template; a data set has a handful


@dataclass
class _Renderer:
    """What is known of one owner's chat template (rebuilt when the template changes).

    Attributes:
        template: The template this was built for.
        direct: The compiled template as a plain function, when it renders exactly like
            ``apply_chat_template`` (checked on probe chats); ``None`` otherwise.
            ``apply_chat_template`` spends about as long converting its arguments as the
            template takes to render.
        skeletons: Renderings of all-sentinel chats, by chat shape (see ``_skeleton``).
    """

    template: Any
    direct: Any = None
    skeletons: dict[str, list[str] | None] = field(default_factory=dict)


_RENDERERS: "weakref.WeakKeyDictionary[Any, _Renderer]" = weakref.WeakKeyDictionary()


def _renderer(owner: Any) -> _Renderer:
    template = getattr(owner, "chat_template", None)
    try:
        known = _RENDERERS[owner]
        if known.template is template:
            return known
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: transformers' own path, nothing cached
        return _Renderer(template)
    renderer = _Renderer(template, _compile(owner, template))
    _RENDERERS[owner] = renderer
    return renderer


def _compile(owner: Any, template: Any) -> Any:
    if not isinstance(template, str):
        return None
    try:
        # A private transformers API, imported here so that its absence falls back to
        # apply_chat_template like any other doubt below.
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(template)
        tok = owner.tokenizer if hasattr(owner, "tokenizer") and hasattr(owner, "image_processor") else owner
        extra = dict(getattr(tok, "special_tokens_map", {}))

        def direct(messages: list[dict[str, Any]], add_generation_prompt: bool = False, tools: list | None = None) -> str:
            return compiled.render(messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt, **extra)

        for generation in (False, True):
            probe = _PROBE if generation else _PROBE[:3]
            if hasattr(owner, "image_processor"):
                probe = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in probe]
            if direct(probe, generation) != owner.apply_chat_template(probe, tokenize=False, add_generation_prompt=generation):
                return None
        return direct
    except Exception:  # any doubt: keep transformers' own path
        return None


def _template(owner: Any, messages: list[dict[str, Any]], example: str, add_generation_prompt: bool = False, tools: list | None = None) -> str:
    try:
        direct = _renderer(owner).direct
        if direct is not None:
            return direct(messages, add_generation_prompt, tools)
        return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, tools=tools)
    except Exception as exc:  # jinja raises its own errors, e.g. "roles must alternate"
        raise MaskingError(f"{example}: the chat template failed: {exc}") from exc


def _skeleton(owner: Any, sentinel_messages: list[dict[str, Any]], tools: list | None) -> list[str] | None:
    """The rendering of an all-sentinel chat, split at the sentinels (template text and
    sentinel numbers alternate); ``None`` if the template refuses it. Cached per template
    and chat shape: the real rendering checks every use, so a stale entry (a template
    that prints today's date) costs a fallback, never a wrong span."""
    key = repr((sentinel_messages, tools))
    cache = _renderer(owner).skeletons
    try:
        return cache[key]
    except KeyError:
        pass
    try:
        chunks = SENTINEL_RE.split(_template(owner, sentinel_messages, "skeleton", tools=tools))
    except MaskingError:
        chunks = None
    if len(cache) >= _SKELETON_CACHE_SIZE:
        cache.clear()
    cache[key] = chunks
    return chunks


def _substitute(chunks: list[str] | None, conv: Conversation, expected: list[int], real: str) -> list[tuple[int, int]] | None:
    """Put the pieces in place of their sentinels; the trained pieces' spans if that
    spells ``real`` with the ``expected`` sentinels each met once, in order."""
    if chunks is None:
        return None
    out, spans, pos, seen = [], [], 0, []
    for j, chunk in enumerate(chunks):
        if j % 2:
            k = int(chunk)
            if k >= len(conv.pieces):  # sentinel-like text inside a message
                return None
            seen.append(k)
            chunk = conv.pieces[k]
            if conv.trained[k]:
                spans.append((pos, pos + len(chunk)))
        out.append(chunk)
        pos += len(chunk)
    return spans if seen == expected and "".join(out) == real else None


def render_chat(owner: Any, conv: Conversation, example: str) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and find the span of every trained reply, in order.

    Args:
        owner: A tokenizer or processor with a chat template.
        conv: The normalised conversation.
        example: How to name this example in errors.

    Returns:
        ``(text, spans)``: the rendered text and the ``(start, end)`` of each trained
        piece and tool-call turn, in order.
    """
    if not conv.chat:
        return _render_plain(owner, conv)
    real = _template(owner, conv.messages, example, tools=conv.tools)
    spans = _substitute(_skeleton(owner, conv.sentinel_messages, conv.tools), conv, list(range(len(conv.pieces))), real)
    if spans is None:
        # The template looks at the prompt's text: sentinels stand in for the replies only.
        replies = [k for k, role in enumerate(conv.roles) if role == "assistant"]
        messages = [s if m["role"] == "assistant" else m for m, s in zip(conv.messages, conv.sentinel_messages)]
        spans = _substitute(SENTINEL_RE.split(_template(owner, messages, example, tools=conv.tools)), conv, replies, real)
    if spans is None:
        spans = _search_spans(real, conv, example)
    if conv.tool_turns:
        spans = sorted(spans + [_turn_span(owner, conv, k, real, example) for k in conv.tool_turns])
    return real, spans


def _turn_span(owner: Any, conv: Conversation, k: int, real: str, example: str) -> tuple[int, int]:
    """The span of assistant message ``k``'s rendered body (content and tool calls): what
    the template adds after the generation prompt of the messages before it, without the
    end-of-turn text it puts after every reply (found with a sentinel reply)."""
    before, tools = conv.messages[:k], conv.tools
    prompt = _template(owner, before, example, add_generation_prompt=True, tools=tools)
    full = _template(owner, conv.messages[: k + 1], example, tools=tools)
    content = SENTINEL.format(len(conv.pieces))
    probe_msg = {"role": "assistant", "content": [{"type": "text", "text": content}] if hasattr(owner, "image_processor") else content}
    probe = _template(owner, [*before, probe_msg], example, tools=tools)
    suffix = probe[len(prompt) + len(content) :]
    if not (probe.startswith(prompt + content) and full.startswith(prompt) and full.endswith(suffix) and real.startswith(full)):
        raise MaskingError(
            f"{example}, message {k}: the chat template renders this tool-call turn differently in context; "
            "its tokens cannot be located exactly"
        )
    end = len(full) - len(suffix)
    if not full[len(prompt) : end].strip():
        raise MaskingError(f"{example}, message {k}: the chat template renders no tool calls (it does not support tools)")
    return len(prompt), end


def _plain_tokens(owner: Any) -> tuple[str, str]:
    """The text a tokenizer puts around a plain text of its own accord (a BOS, as
    Llama's does) and its EOS text: what TRL's prompt-completion tokenization adds."""
    tok = owner.tokenizer if hasattr(owner, "image_processor") else owner
    bos = tok.bos_token or ""
    adds_bos = bool(bos) and tok("x", add_special_tokens=True)["input_ids"][:1] == [tok.bos_token_id]
    return (bos if adds_bos else ""), (tok.eos_token or "")


def _render_plain(owner: Any, conv: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """A plain prompt and completion: ``BOS? + prompt + completion + EOS``; the completion
    is the reply (its EOS is then trained as its end of turn)."""
    bos, eos = _plain_tokens(owner)
    prompt, completion = conv.pieces
    start = len(bos) + len(prompt)
    return f"{bos}{prompt}{completion}{eos}", [(start, start + len(completion))] if conv.trained[1] else []


def _search_spans(real: str, conv: Conversation, example: str) -> list[tuple[int, int]]:
    """Find reply pieces in a rendering whose template rewrote them (e.g. trimmed)."""
    spans, cursor, reply = [], 0, 0
    for text, role, trained in zip(conv.pieces, conv.roles, conv.trained):
        if role != "assistant":
            at = real.find(text, cursor) if text else -1
            if at >= 0:
                cursor = at + len(text)
            continue
        stripped = text.strip()
        at = real.find(stripped, cursor)
        if at < 0:
            raise MaskingError(
                f"{example}: the chat template changed assistant reply {reply} so that it cannot be found "
                "in the rendered text; the reply's tokens cannot be located exactly"
            )
        if trained:
            spans.append((at, at + len(stripped)))
        cursor = at + len(stripped)
        reply += 1
    return spans


def render_prompt(
    owner: Any,
    messages: list[dict[str, Any]],
    *,
    multimodal: bool,
    example: str = "prompt",
    tools: list[dict[str, Any]] | None = None,
    chat: bool = True,
) -> tuple[str, Conversation]:
    """Render the generation prompt for inference: every message before the final
    assistant reply (if there is one), then the template's assistant header.

    Args:
        owner: A tokenizer or processor with a chat template.
        messages: The chat; a trailing assistant message (the gold answer) is dropped.
        multimodal: Whether ``owner`` is a processor.
        example: How to name this example in errors.
        tools: Function definitions for the template.
        chat: False for a plain prompt (no template; the tokenizer's BOS if it adds one).

    Returns:
        ``(text, conversation)``; the conversation lists the media to feed the processor.
    """
    if messages and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    if not any(m.get("role") == "user" for m in messages if isinstance(m, dict)):
        raise MaskingError(f"{example}: no user message to answer")
    conv = normalize(messages, MaskConfig(), multimodal=multimodal, example=example, tools=tools, require_reply=False)
    if not chat:
        return _plain_tokens(owner)[0] + "".join(conv.pieces), conv
    return _template(owner, conv.messages, example, add_generation_prompt=True, tools=tools), conv
