"""The scan cache (``masking.scan_cache``): a second scan of the same data loads the first
one's report; a change to the data, the tokenizer, the chat template or the mask settings
scans again; what could change unseen (tables, image files) is never cached.

Each test has its own cache folder (``scan_cache_dir`` in conftest.py).

Run: ``.venv/bin/python -m pytest tests/test_scan_cache.py -q``
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging

import datasets
import pytest
from typer.testing import CliRunner

from model_garden.cli import app
from model_garden.data.images import ImagePolicy
from model_garden.masking import MaskConfig
from model_garden.masking import scan as scan_module
from model_garden.masking.scan import validate_dataset
from model_garden.masking.templates import with_chat_template
from model_garden.training.config import TrainConfig
from model_garden.training.run import setup_data


def _line(user: str, reply: str = '{"total": "3.00"}') -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join([_line("Receipt: TOTAL 3.00"), "{not json", _line("Receipt: TOTAL 4.00", '{"total": "4.00"}')]) + "\n")
    return path


@pytest.fixture
def scans(monkeypatch):
    """How many scans really ran (not loaded from the cache)."""
    runs = []
    real = scan_module._scan_chunks

    def counted(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_module, "_scan_chunks", counted)
    return runs


def test_a_second_scan_loads_the_first_ones_report(data, smollm2_tokenizer, scans, scan_cache_dir, caplog):
    first = validate_dataset(data, smollm2_tokenizer, MaskConfig(strategy="moderate"), cache=True)
    with caplog.at_level(logging.INFO, logger="model_garden.masking.scan_cache"):
        second = validate_dataset(data, smollm2_tokenizer, MaskConfig(strategy="moderate"), cache=True)
    assert len(scans) == 1 and not first.from_cache
    assert dataclasses.replace(second, from_cache="") == first
    assert [line for line, _ in second.errors] == [2] and second.errors[0][1].startswith(f"{data}:2: not JSON")
    entries = list(scan_cache_dir.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".pkl"  # no temporary file left
    assert second.from_cache == f"{data}: scan loaded from the cache {entries[0]} (--no-scan-cache scans again)"
    assert [r.getMessage() for r in caplog.records] == [second.from_cache]
    validate_dataset(data, smollm2_tokenizer, MaskConfig(strategy="moderate"))  # cache off: scans
    assert len(scans) == 2
    entries[0].write_bytes(b"garbage")  # an unreadable entry is scanned again and replaced
    assert not validate_dataset(data, smollm2_tokenizer, MaskConfig(strategy="moderate"), cache=True).from_cache
    assert validate_dataset(data, smollm2_tokenizer, MaskConfig(strategy="moderate"), cache=True).from_cache
    assert len(scans) == 3


def _more_data(args):
    args["path"].write_text(args["path"].read_text() + _line("Receipt: TOTAL 5.00", '{"total": "5.00"}') + "\n")


def _more_vocabulary(args):
    args["processing"] = copy.deepcopy(args["processing"])
    args["processing"].add_tokens(["<receipt>"])


CHANGES = {
    "data content": _more_data,
    "tokenizer": _more_vocabulary,
    "chat template": lambda args: args.update(processing=with_chat_template(args["processing"], "chatml")),
    "mask strategy": lambda args: args.update(cfg=MaskConfig(strategy="aggressive")),
    "structural weight": lambda args: args.update(cfg=MaskConfig(strategy="moderate", structural_weight=0.5)),
    "max length": lambda args: args.update(max_length=24),
    "image policy": lambda args: args.update(policy=ImagePolicy(allow_outside_paths=True)),
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_input_of_the_report_invalidates_it(change, data, smollm2_tokenizer, scans):
    args = dict(path=data, processing=smollm2_tokenizer, cfg=MaskConfig(strategy="moderate"), max_length=None, policy=None)
    run = lambda: validate_dataset(args["path"], args["processing"], args["cfg"], args["max_length"], args["policy"], cache=True)  # noqa: E731
    run()
    CHANGES[change](args)
    assert not run().from_cache and len(scans) == 2
    assert run().from_cache and len(scans) == 2


def _train_config(tmp_path, data, **options):
    return TrainConfig.from_options(dataset=str(data), eval_dataset=str(data), output=str(tmp_path / "run"), skip_bad_lines=True, **options)


def test_training_prescans_use_the_cache_unless_told_not_to(tmp_path, data, smollm2_tokenizer, scans):
    first = setup_data(_train_config(tmp_path, data), smollm2_tokenizer)
    again = setup_data(_train_config(tmp_path, data), smollm2_tokenizer)
    assert len(scans) == 2  # the training and the eval set, once each
    assert again.scan.from_cache and again.eval_scan.from_cache
    assert again.train.indices == first.train.indices == [0, 1] and again.train.lengths == first.train.lengths
    assert again.scan.fingerprint == first.scan.fingerprint and again.scan.messages == first.scan.messages
    setup_data(_train_config(tmp_path, data, scan_cache=False), smollm2_tokenizer)
    assert len(scans) == 4


def test_what_could_change_unseen_is_not_cached(tmp_path, smollm2_tokenizer, scans):
    (tmp_path / "r.png").write_bytes(b"not read: the scan fails on it, and may not later")
    images = tmp_path / "images.jsonl"
    image_part = {"type": "image_url", "image_url": {"url": "r.png"}}
    images.write_text(json.dumps({"messages": [{"role": "user", "content": [image_part]}, {"role": "assistant", "content": "{}"}]}) + "\n")
    table = tmp_path / "train.parquet"
    datasets.Dataset.from_list([json.loads(_line("Receipt: TOTAL 3.00"))]).to_parquet(table)
    for path in (images, images, table, table):
        assert not validate_dataset(path, smollm2_tokenizer, cache=True).from_cache
    assert len(scans) == 4


def test_validate_data_says_when_it_loaded_the_cache(data):
    runner = CliRunner()
    command = ["validate-data", str(data), "--base-model", "smollm2-135m"]
    assert "scan loaded from the cache" not in runner.invoke(app, command).output
    cached = runner.invoke(app, command)
    assert cached.exit_code == 1 and "scan loaded from the cache" in cached.output and "train.jsonl:2: not JSON" in cached.output
    assert "scan loaded from the cache" not in runner.invoke(app, [*command, "--no-scan-cache"]).output
