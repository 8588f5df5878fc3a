"""Prompt templates and their per-sample choice.

Run: ``.venv/bin/python -m pytest tests/test_vtg_templates.py -q``
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from model_garden.vtg.prompt_templates import (
    STANDARD_TEMPLATES,
    TEMPORAL_TOKEN_TEMPLATES,
    TemplateError,
    TemplateSelector,
    load_templates,
)


@pytest.mark.parametrize("templates", [STANDARD_TEMPLATES, TEMPORAL_TOKEN_TEMPLATES])
def test_builtin_templates_are_many_distinct_and_have_a_query_slot(templates):
    assert len(templates) >= 8
    assert len(set(templates)) == len(templates)
    assert all(t.count("{query}") == 1 for t in templates)
    # Distinct openings: the styles differ from the first words on.
    assert len({t.split()[0] for t in templates}) >= 7


def test_standard_templates_ask_for_seconds_and_token_templates_for_tokens():
    assert all("[start" in t and "]" in t for t in STANDARD_TEMPLATES)
    assert all("temporal token" in t for t in TEMPORAL_TOKEN_TEMPLATES)
    assert not any("temporal token" in t for t in STANDARD_TEMPLATES)


def test_format_fills_the_query_and_leaves_other_braces():
    selector = TemplateSelector(templates=['Q: "{query}" as {"start": s}'], random_selection=False)
    assert selector.format(" a person walks. ", 3) == 'Q: "a person walks." as {"start": s}'


def test_no_random_selection_always_gives_the_first_template():
    for tokens, first in ((False, STANDARD_TEMPLATES[0]), (True, TEMPORAL_TOKEN_TEMPLATES[0])):
        selector = TemplateSelector(use_temporal_tokens=tokens, random_selection=False, seed=7)
        assert {selector.get_template(i) for i in range(50)} == {first}


def test_seeded_choice_depends_only_on_seed_and_index():
    a = TemplateSelector(seed=42)
    b = TemplateSelector(seed=42)
    forward = [a.index(i) for i in range(200)]
    backward = [b.index(i) for i in reversed(range(200))][::-1]
    assert forward == backward  # read order (shuffles, workers) does not matter
    assert forward == [pickle.loads(pickle.dumps(a)).index(i) for i in range(200)]
    assert set(forward) == set(range(len(STANDARD_TEMPLATES)))  # every template gets used
    assert forward != [TemplateSelector(seed=43).index(i) for i in range(200)]


def test_seeded_choice_is_the_same_in_another_process_with_another_hash_seed():
    code = "from model_garden.vtg.prompt_templates import TemplateSelector as T; print([T(seed=42).index(i) for i in range(30)])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123"}).stdout
    assert out.strip() == str([TemplateSelector(seed=42).index(i) for i in range(30)])


def test_unseeded_choice_varies():
    selector = TemplateSelector()
    assert len({selector.index(0) for _ in range(200)}) > 1


def test_template_without_query_slot_is_refused():
    with pytest.raises(TemplateError, match=r"template 1: .*\{query\}"):
        TemplateSelector(templates=["Find {query}", "Find it"])


def test_load_templates_one_per_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Find {query}.\nWhen is {query}?\n", encoding="utf-8")
    assert load_templates(path) == ["Find {query}.", "When is {query}?"]


def test_load_templates_blank_line_separated_blocks(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("\nFind {query}.\nAnswer [start, end].\n\n\nWhen is {query}?\n\n", encoding="utf-8")
    assert load_templates(path) == ["Find {query}.\nAnswer [start, end].", "When is {query}?"]


def test_load_templates_yaml(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text('- "Find {query}."\n- |\n  When is {query}?\n  Answer [start, end].\n', encoding="utf-8")
    assert load_templates(path) == ["Find {query}.", "When is {query}?\nAnswer [start, end].\n"]


def test_load_templates_names_file_and_line_of_a_bad_template(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("Find {query}.\nWhen is it?\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=rf"{text}:2: .*\{{query\}}"):
        load_templates(text)
    yml = tmp_path / "t.yml"
    yml.write_text("- Find {query}.\n- When is it?\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=rf"{yml}:2:"):
        load_templates(yml)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("templates:\n  - Find {query}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=rf"{mapping}:1: expected a YAML list"):
        load_templates(mapping)
    unquoted = tmp_path / "u.yaml"
    unquoted.write_text("- Find {query}.\n- {query}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=rf"{unquoted}:2: expected a template string"):
        load_templates(unquoted)


def test_loaded_templates_extend_the_builtin_ones(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("My own phrasing of {query}\n", encoding="utf-8")
    selector = TemplateSelector(templates=STANDARD_TEMPLATES + tuple(load_templates(path)), seed=0)
    assert "My own phrasing of a dog" in {selector.format("a dog", i) for i in range(300)}


def test_notes_import_path_still_works():
    from vtg_datasets.prompt_templates import TemplateSelector as Compat

    assert Compat is TemplateSelector
    assert Compat(use_temporal_tokens=True, random_selection=True, seed=42).format("a person walks", 0).count("a person walks") == 1
