"""Chat templates chosen by the user: ``--chat-template NAME|FILE``.

Axolotl (``chat_template``), TRL (``chat_template_path``) and Unsloth
(``get_chat_template``) let users render chats with a template other than the model's:
a base model has none, and SmolLM2's own renders no tool calls. Here the option takes a
Jinja file, or a name: ``chatml`` (bundled: ChatML with tools, in Qwen2.5's layout
without its default system prompt) or any template TRL ships in ``trl/chat_templates/``
(``qwen2_5``, ``llama3``, ...; TRL must be installed).

``with_chat_template`` gives a copy of the tokenizer or processor that renders with it:
the shared, cached one is never changed. Training saves the copy beside the run, so
``predict``, ``export`` and the model card use the same template. Masks stay exact on any
template (the sentinel rendering needs no ``{% generation %}``); a template that renders
no reply, or drops tool calls the data has, is refused by the renderer with the reason.

Try it: ``python -m model_garden.masking.templates chatml``
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from typing import Any

BUNDLED = Path(__file__).resolve().parent.parent / "assets" / "chat_templates"


def _trl_templates() -> Path | None:
    spec = importlib.util.find_spec("trl")
    return Path(spec.origin).parent / "chat_templates" if spec and spec.origin else None


def available() -> list[str]:
    """The template names ``--chat-template`` knows."""
    names = {p.stem for p in BUNDLED.glob("*.jinja")}
    trl = _trl_templates()
    if trl is not None and trl.is_dir():
        names |= {p.stem for p in trl.glob("*.jinja")}
    return sorted(names)


def resolve_chat_template(spec: str) -> str:
    """The Jinja text of ``--chat-template``: a file, else a known name.

    Raises:
        ValueError: neither a file nor a known name (the names are listed).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    trl = _trl_templates()
    for folder in (BUNDLED, trl):
        if folder is not None and (folder / f"{spec}.jinja").is_file():
            return (folder / f"{spec}.jinja").read_text(encoding="utf-8")
    names = available()
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    raise ValueError(f"--chat-template {spec!r}: not a file, nor a known template name ({shown})")


def with_chat_template(processing: Any, spec: str | None) -> Any:
    """A copy of a tokenizer or processor that renders chats with ``--chat-template spec``
    (``resolve_chat_template``); the object itself when ``spec`` is None."""
    if spec is None or processing is None:
        return processing
    template = resolve_chat_template(spec)
    own = copy.copy(processing)
    own.chat_template = template
    if hasattr(own, "tokenizer") and hasattr(own, "image_processor"):  # a processor: its tokenizer too
        own.tokenizer = copy.copy(own.tokenizer)
        own.tokenizer.chat_template = template
    return own


if __name__ == "__main__":
    print(resolve_chat_template(sys.argv[1]))
