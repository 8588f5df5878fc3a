"""The scan over several processes (``masking.scan`` with ``num_proc``, ``masking.scan_pool``):
the same report as one process, bad records' messages and line numbers included.

Chunks are made small (``CHUNK``) so a file of a few dozen lines spans several of them,
and workers start at once (``POOL_AFTER_S``).

Run: ``.venv/bin/python -m pytest tests/test_scan_parallel.py -q``
"""

from __future__ import annotations

import io
import json
import pickle

import pytest
from PIL import Image

from model_garden.data.images import data_uri
from model_garden.data.sources import open_source
from model_garden.masking import ChatCodec, MaskConfig
from model_garden.masking import scan as scan_module
from model_garden.masking.scan import scan_source, validate_dataset
from model_garden.masking.scan_pool import ordered_map


def _line(user, reply='{"total": "3.00", "items": ["a", "b"]}') -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})


def _png(size) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


# The lines of ``mixed`` that are bad (not JSON, no reply, prose under a JSON strategy, an
# image for a text-only model), and the good ones.
BAD = [2, 4, 5, 8, 10, 11, 14, 16, 17, 20, 22, 23, 26, 28, 29]
GOOD = [1, 3, 7, 9, 13, 15, 19, 21, 25, 27]


@pytest.fixture
def mixed(tmp_path):
    """30 lines: good records of varied length, inline images, and bad records of every kind."""
    lines = []
    for i in range(30):
        kind = i % 6
        if kind == 1:
            lines.append('{"messages": [' if i % 12 == 1 else json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
        elif kind == 3:
            lines.append(_line("Receipt", reply=f"The total is {i}"))  # prose under a JSON strategy
        elif kind == 4:
            lines.append(_line([{"type": "text", "text": "Read it."}, {"type": "image_url", "image_url": {"url": _png((8 + i, 5 + i))}}]))
        elif kind == 5:
            lines.append("")
        else:  # some longer than --max-length 64, cut inside the reply
            lines.append(_line("Receipt: " + "ITEM 1.00 " * (i % 4), reply=json.dumps({"total": f"{i}.00", "items": [f"item {k}" for k in range(i % 9)]})))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 records, handed to the workers from the second one on."""
    monkeypatch.setattr(scan_module, "CHUNK", 3)
    monkeypatch.setattr(scan_module, "POOL_AFTER_S", 0.0)


@pytest.fixture
def pool_calls(monkeypatch):
    """The process counts the scan asked ``ordered_map`` for (the real one still runs)."""
    calls = []

    def spy(task, chunks, processes):
        calls.append(processes)
        return ordered_map(task, chunks, processes)

    monkeypatch.setattr(scan_module, "ordered_map", spy)
    return calls


def _in_process_pool(task, chunks, processes):
    """``ordered_map`` without processes, but with their boundary: everything crossing it is pickled."""
    task = pickle.loads(pickle.dumps(task))
    for chunk in chunks:
        yield pickle.loads(pickle.dumps(task(pickle.loads(pickle.dumps(chunk)))))


def test_chunked_reports_merge_into_the_single_process_one(mixed, smollm2_tokenizer, small_chunks, monkeypatch):
    cfg = MaskConfig(strategy="moderate", structural_weight=0.1)  # fractional weights: the float sum must match to the bit
    serial = validate_dataset(mixed, smollm2_tokenizer, cfg, max_length=64)
    monkeypatch.setattr(scan_module, "ordered_map", _in_process_pool)
    chunked = validate_dataset(mixed, smollm2_tokenizer, cfg, max_length=64, num_proc=2)
    assert chunked == serial
    assert (serial.records, serial.blank, serial.truncated, serial.images, len(serial.kept)) == (25, 5, 8, 5, 10)
    assert [line for line, _ in serial.errors] == BAD
    assert all(message.startswith((f"{mixed}:{line}:", f"{mixed}:{line},")) for line, message in serial.errors)


def test_a_short_scan_starts_no_workers(mixed, smollm2_tokenizer, pool_calls):
    validate_dataset(mixed, smollm2_tokenizer, num_proc=2)  # done well before POOL_AFTER_S
    assert pool_calls == []


@pytest.mark.slow
def test_worker_processes_give_the_single_process_report(mixed, smollm2_tokenizer, small_chunks, pool_calls):
    cfg = MaskConfig(strategy="moderate", structural_weight=0.1)
    serial = validate_dataset(mixed, smollm2_tokenizer, cfg, max_length=64)
    assert validate_dataset(mixed, smollm2_tokenizer, cfg, max_length=64, num_proc=2) == serial
    # A source: workers read the samples themselves; positions count from the first usable record.
    source = open_source(mixed, skip_bad_lines=True)
    codec = ChatCodec.for_data(smollm2_tokenizer, mixed)
    one = scan_source(source, codec, cfg, 64)
    two = scan_source(source, codec, cfg, 64, num_proc=2)
    assert two == one and pool_calls == [2, 2]
    refused_on_reading = [2, 8, 14, 20, 26]  # by open_source: listed first
    assert [line for line, _ in one.errors] == refused_on_reading + [n for n in BAD if n not in refused_on_reading]
    assert [source.where(i) for i in one.kept] == [f"{mixed}:{n}" for n in GOOD]
