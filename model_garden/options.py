"""Typed option groups: dataclasses whose fields are command-line flags and YAML keys.

A group is a dataclass whose docstring lists its fields under ``Attributes:`` (Google
style); that text is the flag's help, so an option is documented once. ``check_value``
enforces a field's annotation on values from YAML or Python (``lr: fast`` or
``max_steps: 2.7`` is an error naming the option, the file and line, and the type
expected), and ``read_yaml`` keeps the line of every key so errors can point at it.

Flag name = field name with dashes (``max_steps`` -> ``--max-steps``); field names are
unique across the groups of a command, so flags stay flat while the YAML file may be
flat or grouped (``optim: {lr: 1e-4}``).

Try it: ``python -m model_garden.training.config`` prints the options of ``train`` by group.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the option and where it came from."""


def flag(name: str) -> str:
    """The command-line flag of a field."""
    return "--" + name.replace("_", "-")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description from the ``Attributes:`` section of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    current = None
    in_section = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_section = True
            continue
        if not in_section:
            continue
        if line and not line.startswith(" "):  # the next section
            break
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            current = m.group(1)
            docs[current] = m.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args) + (" or null" if type(None) in typing.get_args(tp) else "")
    if origin is list:
        return f"a list of {_describe(args[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, getattr(tp, "__name__", str(tp)))


def check_value(name: str, value: Any, tp: Any, where: str) -> Any:
    """``value`` if it fits the annotation ``tp`` (ints are accepted as floats, one string
    as a one-item list); else a ``ConfigError`` naming the option."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_value(name, value, arg, where)
            except ConfigError:
                continue
    elif origin is list:
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            return [check_value(name, v, args[0], where) for v in items]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # YAML reads `name: 123` as a number
            return str(value)
    else:
        return value
    raise ConfigError(f"{where}{flag(name)} must be {_describe(tp)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type, values: dict[str, Any], where: dict[str, str] | None = None) -> Any:
    """An instance of the option group ``cls`` from checked ``values``.

    Args:
        cls: The dataclass.
        values: Field name -> value (unknown names are an error).
        where: Field name -> where its value came from (``run.yaml line 4: ``), for errors.
    """
    where = where or {}
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for name in values:
        if name not in names:
            raise ConfigError(f"{where.get(name, '')}unknown option {name!r}")
    checked = {name: check_value(name, v, hints[name], where.get(name, "")) for name, v in values.items()}
    try:
        return cls(**checked)
    except ConfigError as exc:  # a range check: point at the file and line the value came from
        named = next((n for n in checked if str(exc).startswith(flag(n) + " ")), None)
        if named is None or not where.get(named):
            raise
        raise ConfigError(f"{where[named]}{exc}") from None


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML file of options: ``(values, line of each key)``; nested mappings (groups)
    are returned as they are, their keys' lines included.

    Raises:
        ConfigError: the file is not a mapping or not valid YAML (with the line).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        values = yaml.safe_load(text) or {}
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of option: value")
    lines: dict[str, int] = {}

    def walk(mapping: Any) -> None:
        for key, value in getattr(mapping, "value", []):
            if isinstance(key, yaml.ScalarNode):
                lines.setdefault(str(key.value).replace("-", "_"), key.start_mark.line + 1)
                if isinstance(value, yaml.MappingNode):
                    walk(value)

    walk(node)
    return values, lines

