"""Prompt templates for temporal grounding, and which one each sample gets.

Training on one phrasing teaches the model that phrasing; several styles (instruction,
question, task description, terse, conversational, ...) make it answer the question
however it is asked. ``STANDARD_TEMPLATES`` ask for ``[start, end]`` in seconds,
``TEMPORAL_TOKEN_TEMPLATES`` for ``<|box_start|><s><e><|box_end|>`` time-bin tokens.

With a seed, sample ``i`` always gets the same template: the choice is a hash of
``(seed, i)``, not a draw from a shared random stream, so it does not depend on the
order samples are read in (epochs' shuffles, dataloader workers, resumed runs).

Try it: ``python -m model_garden.vtg.prompt_templates "a person opens a door"``
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

QUERY_SLOT = "{query}"

STANDARD_TEMPLATES: tuple[str, ...] = (
    # direct instruction
    'Given the video, please identify the start and end time of the moment described by the following query: "{query}"\n'
    "Provide the answer in the format: [start_time, end_time], in seconds.",
    # question
    'In the provided video, when does the following event occur: "{query}"?\n'
    "Answer with [start, end] in seconds.",
    # task description
    'Task: temporal grounding. Watch the video and locate the segment in which "{query}" takes place. '
    "Output the segment as [start, end], with both times in seconds.",
    # concise
    'Find when "{query}" occurs in the video.\nAnswer with: [start, end]',
    # conversational
    'I need to find a specific moment in this video. The description is: "{query}" '
    "Could you tell me when it starts and ends? Please reply as [start, end] in seconds.",
    # fill-in / completion
    'Query: "{query}"\nThe moment described by the query happens during [start, end] seconds. '
    "Fill in the start and end times.",
    # annotator role
    "You are annotating a video. Mark the start and end of the event described below, "
    'in seconds, as [start, end].\nEvent: "{query}"',
    # search style
    'Search the video for the moment matching "{query}" and return its time span as [start, end] (seconds).',
    # timestamp request
    'At what time does "{query}" begin in the video, and at what time does it end? '
    "Give both times in seconds, formatted as [start, end].",
)

TEMPORAL_TOKEN_TEMPLATES: tuple[str, ...] = (
    # direct instruction
    'Given the video, please identify the start and end time of the moment described by the following query: "{query}"\n'
    "Provide the answer using temporal tokens: <|box_start|><start><end><|box_end|>.",
    # question
    'In the provided video, when does the following event occur: "{query}"? Please specify using temporal tokens.',
    # task description
    'Task: temporal grounding. Watch the video and locate the segment in which "{query}" takes place. '
    "Output the segment as a start and an end temporal token between <|box_start|> and <|box_end|>.",
    # concise
    'Find when "{query}" occurs in the video.\nAnswer with temporal tokens.',
    # conversational
    'I need to find a specific moment in this video. The description is: "{query}" '
    "Could you mark where it starts and ends with temporal tokens?",
    # fill-in / completion
    'Query: "{query}"\nThe moment described by the query spans <|box_start|><start><end><|box_end|>. '
    "Fill in the start and end temporal tokens.",
    # annotator role
    "You are annotating a video. Mark the start and end of the event described below with temporal tokens, "
    'where <0> is the beginning of the video and the last token its end.\nEvent: "{query}"',
    # search style
    'Search the video for the moment matching "{query}" and return its span as temporal tokens.',
    # relative-position wording
    'Where in the video, relative to its length, does "{query}" happen? '
    "Answer with the start and end temporal tokens.",
)


class TemplateError(ValueError):
    """A template is unusable; the message names the file and line when there is one."""


def check_template(template: str, where: str = "template") -> str:
    """Return ``template`` if it has a ``{query}`` slot, else raise ``TemplateError``."""
    if not isinstance(template, str) or QUERY_SLOT not in template:
        raise TemplateError(f"{where}: a prompt template needs a {QUERY_SLOT} slot, got {template!r}")
    return template


def fill(template: str, query: str) -> str:
    """Put ``query`` into the ``{query}`` slot. Only that slot is replaced, so templates may
    hold other braces (JSON examples) without escaping them."""
    return template.replace(QUERY_SLOT, query.strip())


class TemplateSelector:
    """Chooses the template of each sample.

    Args:
        use_temporal_tokens: Pick from ``TEMPORAL_TOKEN_TEMPLATES`` instead of ``STANDARD_TEMPLATES``.
        random_selection: Vary the template per sample; ``False`` always gives the first.
        seed: Make the choice a function of ``(seed, sample_idx)`` only. Without a seed every
            call draws from the operating system's entropy, so forked dataloader workers do
            not repeat each other's choices.
        templates: Use these templates instead of the built-in ones (see ``load_templates``).
    """

    def __init__(
        self,
        use_temporal_tokens: bool = False,
        random_selection: bool = True,
        seed: int | str | None = None,
        templates: Sequence[str] | None = None,
    ):
        if templates is None:
            templates = TEMPORAL_TOKEN_TEMPLATES if use_temporal_tokens else STANDARD_TEMPLATES
        self.templates = tuple(check_template(t, f"template {i}") for i, t in enumerate(templates))
        if not self.templates:
            raise TemplateError("templates: the list is empty")
        self.use_temporal_tokens = use_temporal_tokens
        self.random_selection = random_selection
        self.seed = seed

    def index(self, sample_idx: int) -> int:
        """Which template (position in ``self.templates``) sample ``sample_idx`` gets."""
        n = len(self.templates)
        if not self.random_selection or n == 1:
            return 0
        if self.seed is None:
            return secrets.randbelow(n)
        digest = hashlib.sha256(f"{self.seed}:{int(sample_idx)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % n

    def get_template(self, sample_idx: int) -> str:
        """The template of sample ``sample_idx``."""
        return self.templates[self.index(sample_idx)]

    def format(self, query: str, sample_idx: int) -> str:
        """The prompt for ``query`` as sample ``sample_idx``."""
        return fill(self.get_template(sample_idx), query)


def load_templates(path: str | Path) -> list[str]:
    """Read prompt templates from a file.

    Formats, by extension:

    * ``.yaml`` / ``.yml``: a list of strings (quote one that starts with ``{``, or YAML
      reads a mapping);
    * anything else, plain text: one template per line; or, if the file has a blank line,
      templates separated by blank lines, so a template can span several lines.

    Every template must contain ``{query}``.

    Returns:
        The templates, in file order.

    Raises:
        TemplateError: naming the file and line of a bad template.
        FileNotFoundError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"templates file {path} not found")
    text = path.read_text(encoding="utf-8")
    entries = _yaml_entries(text, path) if path.suffix.lower() in (".yaml", ".yml") else _text_entries(text)
    if not entries:
        raise TemplateError(f"{path}: no templates found")
    return [check_template(t, f"{path}:{line}") for line, t in entries]


def _text_entries(text: str) -> list[tuple[int, str]]:
    """``(line, template)`` pairs; blank lines inside the file switch to block mode."""
    lines = list(enumerate(text.splitlines(), start=1))
    filled = [i for i, line in lines if line.strip()]
    if not filled:
        return []
    body = lines[filled[0] - 1 : filled[-1]]
    if all(line.strip() for _, line in body):
        return [(i, line.strip()) for i, line in body]
    entries: list[tuple[int, str]] = []
    block: list[tuple[int, str]] = []
    for i, line in body + [(0, "")]:
        if line.strip():
            block.append((i, line.rstrip()))
        elif block:
            entries.append((block[0][0], "\n".join(b for _, b in block)))
            block = []
    return entries


def _yaml_entries(text: str, path: Path) -> list[tuple[int, str]]:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TemplateError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.SequenceNode):
        raise TemplateError(f"{path}:{root.start_mark.line + 1}: expected a YAML list of template strings")
    entries = []
    for node in root.value:
        if not isinstance(node, yaml.ScalarNode):
            raise TemplateError(f"{path}:{node.start_mark.line + 1}: expected a template string")
        entries.append((node.start_mark.line + 1, node.value))
    return entries


if __name__ == "__main__":
    query = sys.argv[1] if len(sys.argv) > 1 else "a person opens a door"
    for tokens in (False, True):
        selector = TemplateSelector(use_temporal_tokens=tokens, seed=0)
        for i in range(3):
            print(f"--- temporal_tokens={tokens} sample {i} (template {selector.index(i)})")
            print(selector.format(query, i))
