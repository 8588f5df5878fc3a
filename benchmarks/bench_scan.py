"""The data scan that ``train`` runs before training (``open_source`` + ``scan_source``):
records per second on 1 and 2 processes against the floor, then a scan of a large file
with its wall time and peak memory, and the time of the second, cached scan.

* throughput (``--throughput-records`` records, 1 and 2 processes): the scan, and the
  floor: each record's chat template rendered and tokenized, nothing else (what any SFT
  trainer pays), run the same way (workers read the records by index, in chunks of
  ``CHUNK``). With 2 processes the workers take over from the first chunk on
  (``POOL_AFTER_S`` 0), and both times include their start, measured alone as
  ``worker_start_s``. Reported in records per second and per process, and as scan /
  floor time.
* large (``--records`` records, ``--num-proc`` processes, the scan as ``train`` runs it):
  ``open`` (reading the file's line offsets, checking each line), the scan, records per
  second, and the peak resident memory of this process and its workers together,
  sampled every 50 ms; then ``cached``: the same again, the report now loaded from the
  scan cache (a temporary folder).

Records: ``--data forms`` (default): ``make-data forms``'s text records (about 1,000
tokens each; ``--forms`` of them are generated), repeated to the count asked with a
reference line added to each prompt so no two are equal; ``--data example``: the bundled
``model_garden/assets/example.jsonl`` repeated the same way. Mask settings: ``train``'s
defaults (``--mask-strategy auto``, ``--max-length 2048``), SmolLM2's tokenizer.

Run: ``python benchmarks/bench_scan.py [--records 100000] [--throughput-records 4000]
[--num-proc N] [--data forms|example] [--forms 200]``; prints JSON. A small check:
``--records 2000 --throughput-records 1000``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import psutil

from model_garden.cores import default_threads
from model_garden.data.sources import open_source
from model_garden.masking import ChatCodec
from model_garden.masking import scan as scan_module
from model_garden.masking.scan import CHUNK, scan_source
from model_garden.masking.scan_pool import ordered_map
from model_garden.models import load_processing
from model_garden.training.config import DataOptions, MaskOptions

BUNDLED = Path(__file__).resolve().parents[1] / "model_garden" / "assets" / "example.jsonl"


def base_records(kind: str, forms: int, folder: Path) -> list[dict[str, Any]]:
    """The records to repeat: generated forms, or the bundled example."""
    if kind == "example":
        path = BUNDLED
    else:
        from model_garden.data.forms import make_forms

        make_forms(folder / "forms", n=forms, seed=0, val_fraction=0.0, test_fraction=0.0)
        path = folder / "forms" / "text" / "train.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_records(path: Path, records: list[dict[str, Any]], n: int) -> Path:
    """``n`` records cycling through ``records``, each prompt given its own reference line."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            record = json.loads(json.dumps(records[i % len(records)]))
            user = next(m for m in record["messages"] if m["role"] == "user")
            user["content"] += f"\nReference: {i:07d}"
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


class Floor:
    """Render and tokenize the records of a chunk of source indices, nothing else."""

    def __init__(self, source: Any, tokenizer: Any):
        self.source, self.tokenizer = source, tokenizer

    def __call__(self, chunk: tuple[int, range]) -> int:
        tok = self.tokenizer
        for i in chunk[1]:
            tok(tok.apply_chat_template(self.source.sample(i).messages, tokenize=False))
        return len(chunk[1])


def floor_seconds(source: Any, tokenizer: Any, processes: int) -> float:
    chunks = ((i, range(i, min(i + CHUNK, len(source)))) for i in range(0, len(source), CHUNK))
    task = Floor(source, tokenizer)
    start = time.perf_counter()
    done = sum(map(task, chunks) if processes == 1 else ordered_map(task, chunks, processes))
    assert done == len(source)
    return time.perf_counter() - start


@contextmanager
def peak_rss() -> Iterator[Callable[[], float]]:
    """The peak resident memory (MB) of this process and its children while inside."""
    me, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            total = me.memory_info().rss
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak[0] = max(peak[0], total)
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield lambda: peak[0] / 2**20
    finally:
        stop.set()
        thread.join()


def timed_scan(path: Path, codec: ChatCodec, num_proc: int, cache: bool) -> dict[str, float]:
    mask, data = MaskOptions(), DataOptions()
    start = time.perf_counter()
    source = open_source(path, skip_bad_lines=True)
    opened = time.perf_counter()
    report = scan_source(source, codec, mask.mask_config(), data.max_length, num_proc=num_proc, cache=cache)
    end = time.perf_counter()
    assert report.ok and len(report.kept) == len(source), report.messages[:3]
    return {"open_s": round(opened - start, 2), "scan_s": round(end - opened, 2), "total_s": round(end - start, 2), "from_cache": bool(report.from_cache)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records of the large scan")
    parser.add_argument("--throughput-records", type=int, default=4_000, help="records of the 1- and 2-process throughput runs")
    parser.add_argument("--num-proc", type=int, default=None, help="processes of the large scan (default: the free cores)")
    parser.add_argument("--data", choices=("forms", "example"), default="forms", help="generated forms, or the bundled example")
    parser.add_argument("--forms", type=int, default=200, help="forms to generate and repeat (--data forms)")
    args = parser.parse_args()

    free_cores = default_threads()  # before this benchmark keeps any busy
    tokenizer = load_processing("smollm2-135m")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["MODEL_GARDEN_SCAN_CACHE"] = str(folder / "scans")  # the user's cache stays as it was
        records = base_records(args.data, args.forms, folder)
        small = write_records(folder / "throughput.jsonl", records, args.throughput_records)
        codec = ChatCodec.for_data(tokenizer, small)
        start = time.perf_counter()
        list(ordered_map(Floor(open_source(small), tokenizer), [(0, range(0))], 2))
        worker_start_s, throughput = round(time.perf_counter() - start, 2), {}
        for processes in (1, 2):
            source = open_source(small)
            with mock.patch.object(scan_module, "POOL_AFTER_S", 0.0):
                scan_s = timed_scan(small, codec, processes, cache=False)["scan_s"]
            floor_s = floor_seconds(source, tokenizer, processes)
            n = len(source)
            throughput[str(processes)] = {
                "scan_records_per_s": round(n / scan_s, 1),
                "floor_records_per_s": round(n / floor_s, 1),
                "scan_records_per_s_per_process": round(n / scan_s / processes, 1),
                "floor_records_per_s_per_process": round(n / floor_s / processes, 1),
                "scan_over_floor": round(scan_s / floor_s, 2),
            }

        large = write_records(folder / "large.jsonl", records, args.records)
        num_proc = args.num_proc or free_cores
        with peak_rss() as peak:
            first = timed_scan(large, ChatCodec.for_data(tokenizer, large), num_proc, cache=True)
            peak_mb = peak()
        cached = timed_scan(large, ChatCodec.for_data(tokenizer, large), num_proc, cache=True)
        assert cached["from_cache"] and not first["from_cache"]
        print(json.dumps({
            "data": {"kind": args.data, "distinct_records": len(records), "large_file_mb": round(large.stat().st_size / 2**20, 1)},
            "machine": {"cores": psutil.cpu_count(), "free_cores": free_cores},
            "chunk": CHUNK,
            "throughput": {"records": args.throughput_records, "worker_start_s": worker_start_s, "by_processes": throughput},
            "large": {
                "records": args.records, "num_proc": num_proc, **{k: v for k, v in first.items() if k != "from_cache"},
                "records_per_s": round(args.records / first["scan_s"], 1), "peak_rss_mb": round(peak_mb),
            },
            "cached": {k: v for k, v in cached.items() if k != "from_cache"},
        }, indent=2))


if __name__ == "__main__":
    main()
