"""Predict replies for a dataset, greedily, with schema-constrained decoding by default.

Each sample's prompt is encoded by the model's ``ChatCodec`` (the function training
uses), the replies are generated in batches and written as JSONL, one line per record in
dataset order::

    {"line": 12, "output": "{\\"company\\": \\"ACME\\", ...}", "constrained": true, "grounded": true,
     "new_tokens": 41, "spans": {"/company": [10, 14]}, "confidence": {"/company": 0.97},
     "scores": {"/company": {"product": 0.97, "min": 0.98, "geomean": 0.99, "raw_product": 0.9, "free_tokens": 2}}}

``confidence`` holds one number in [0, 1] per leaf value, keyed by JSON Pointer
(``inference.confidence``); a ``calibration.json`` beside the model (``model-garden
calibrate``) maps it to the probability of being right. With ``--grounded`` every string
value is a span of the record's source text and ``spans`` says where
(``inference.grounding``).

``predict_samples`` is the one batch loop for text, vision and VTG (``vtg.predict``).
Every record is checked (prompt, images, schema) before anything is decoded, and the file
is written under a temporary name and renamed when complete, so an earlier predictions
file is never left half overwritten; ``--resume`` keeps a partial file's complete rows
and decodes the records it lacks. Records are decoded in order of prompt length
(``generate.by_prompt_length``: less padding per batch) and the file is then written in
dataset order. ``OUT.meta.json`` records the dataset's fingerprint, the model and
the budget, so ``evaluate`` can refuse predictions made for another dataset.

The model is a training output folder (a LoRA adapter is merged into its base model), a
plain Hugging Face model folder, or any ``--base-model`` value. The schema comes from
``--schema``, else from the dataset (``schema.json`` beside it, or the schema each
record carries). The budget defaults to the run's longest training reply plus a margin.

Try it: ``python -m model_garden.inference.predict`` predicts the bundled example with
the embedded SmolLM2 and prints the replies.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from model_garden import jsonfmt
from model_garden.cores import default_threads
from model_garden.data.sample import SOURCE_FIELD, DataError, Sample
from model_garden.data.sources import SampleView, open_source
from model_garden.inference.calibration_map import CALIBRATION_FILE, CalibrationMap
from model_garden.inference.confidence import DEFAULT_AGGREGATE, Reply, fill_confidence_scores
from model_garden.inference.generate import by_prompt_length
from model_garden.inference.grounding import grounded_constraint, value_spans
from model_garden.inference.loading import Generate, engine_generator
from model_garden.locks import FileLock
from model_garden.progress import progress_reporter
from model_garden.masking.codec import ChatCodec
from model_garden.masking.strategies import MaskingError
from model_garden.masking.templates import with_chat_template

DEFAULT_BUDGET = 256


def run_budget(model: str | Path) -> int | None:
    """A budget from a training run: its longest training reply in tokens, plus a quarter
    and 16 tokens for replies longer than any seen in training; None for other folders."""
    metrics = Path(model).expanduser() / "metrics.json"
    if not metrics.is_file():
        return None
    longest = json.loads(metrics.read_text(encoding="utf-8")).get("longest_reply_tokens")
    return int(longest * 1.25) + 16 if longest else None


def predict_samples(
    generate: Generate,
    codec: ChatCodec,
    samples: Sequence[Sample],
    write: Callable[[Sample, Reply], None],
    *,
    constraints: Sequence[dict | str | None] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = DEFAULT_BUDGET,
    label: str = "predict",
) -> dict[str, Any]:
    """The batch loop shared by ``predict`` and ``predict-vtg``.

    Args:
        generate: Decodes a batch of encoded prompts (``loading.hf_generator``).
        codec: Encodes the prompts.
        samples: What to answer, in order.
        write: Called with each sample and its ``Reply``, in order.
        constraints: Per sample, what its reply is constrained to: a JSON schema, a
            grounded grammar (``grounding.grounded_constraint``) or None (free).
        batch_size: Prompts decoded together.
        max_new_tokens: Generation budget per reply.
        label: The progress line's name.

    Returns:
        ``{"examples", "new_tokens", "seconds", "cut"}``; ``cut`` lists the samples
        (``where``) whose reply hit the budget.
    """
    total, cut, start = 0, [], time.perf_counter()
    with progress_reporter(label, len(samples)) as report:
        for lo in range(0, len(samples), batch_size):
            batch = samples[lo : lo + batch_size]
            prompts = [codec.encode_prompt(s) for s in batch]
            constraint = None if constraints is None else list(constraints[lo : lo + batch_size])
            if constraint is not None and all(c is None for c in constraint):
                constraint = None
            for sample, reply in zip(batch, generate(prompts, constraint, max_new_tokens)):
                write(sample, reply)
                total += reply.new_tokens
                if reply.new_tokens >= max_new_tokens:
                    cut.append(sample.where)
            report(len(batch), total)
    return {"examples": len(samples), "new_tokens": total, "seconds": time.perf_counter() - start, "cut": cut}


def _check(codec: ChatCodec, samples: Sequence[Sample], constrained: bool, source_field: str | None) -> list[dict | str | None]:
    """Every sample's constraint (its schema; its grounded grammar with ``source_field``),
    after checking its prompt, images and source; all problems at once."""
    constraints, errors = [], []
    for sample in samples:
        try:
            codec.prompt_text(sample)
            codec.images(sample)
            schema = codec.schema(sample) if constrained else None
            if constrained and schema is None:
                raise DataError(
                    f"{sample.where}: no JSON schema for constrained decoding (the dataset carries none); "
                    "pass --schema FILE, or --no-constrained to decode freely"
                )
            constraints.append(grounded_constraint(schema, sample, source_field) if source_field is not None else schema)
        except (DataError, MaskingError, ValueError) as exc:
            errors.append(str(exc))
    if errors:
        more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise DataError(f"{len(errors)} record(s) cannot be predicted; nothing was decoded:\n  " + "\n  ".join(errors[:10]) + more)
    return constraints


def prediction_row(
    sample: Sample, reply: Reply, *, constrained: bool, source_field: str | None, calibration: CalibrationMap | None = None,
    review_at: float | None = None,
) -> dict[str, Any]:
    """One line of a predictions file: the reply (a ``confidence_score`` beside
    ``contents`` filled in), its confidence per leaf value (mapped by ``calibration``, else
    the ``DEFAULT_AGGREGATE``) and the scores behind it, grounded, each string value's
    span in the source, and with ``review_at`` (and ``calibration``), ``needs_review``:
    the values to check (``CalibrationMap.to_review``), ``[""]`` (RFC 6901: the whole
    reply) when it has no scores: not one JSON object, or from an engine that gives no
    confidence (vLLM)."""
    if calibration is not None:
        confidence = calibration.calibrate(reply.scores)
    else:
        confidence = {pointer: s[DEFAULT_AGGREGATE] for pointer, s in reply.scores.items()}
    output = reply.text
    if confidence and '"confidence_score"' in output:
        output = jsonfmt.dumps(fill_confidence_scores(json.loads(output), confidence))
    row = {"line": sample.line, "output": output, "constrained": constrained, "grounded": source_field is not None,
           "new_tokens": reply.new_tokens}
    if source_field is not None and reply.scores:  # scores exist only for a complete JSON reply
        row["spans"] = value_spans(reply.text, sample.source_text(source_field))
    if review_at is not None and calibration is not None:
        row["needs_review"] = calibration.to_review(confidence, review_at) if reply.scores else [""]
    return {**row, "confidence": confidence, "scores": reply.scores}


def _done_rows(partial: Path) -> dict[int, str]:
    """The complete rows of a partial predictions file by their record's line (a cut last
    line is dropped)."""
    if not partial.is_file():
        return {}
    rows = {}
    for number, line in enumerate(partial.read_text(encoding="utf-8").split("\n")[:-1], 1):
        try:
            rows[json.loads(line)["line"]] = line
        except (ValueError, KeyError, TypeError):
            if line.strip():
                raise DataError(f"{partial}:{number}: not a prediction row; --resume cannot continue this file (delete it to start again)") from None
    return rows


def predict(
    model: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    schema: str | Path | dict | None = None,
    constrained: bool = True,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    threads: int | None = None,
    resume: bool = False,
    data_format: str = "auto",
    allow_remote_images: bool = False,
    allow_outside_paths: bool = False,
    engine: str = "hf",
    dtype: str = "float32",
    grounded: bool = False,
    source_field: str = SOURCE_FIELD,
    calibration: str | Path | None = None,
    chat_template: str | None = None,
    review_at: float | None = None,
) -> dict[str, Any]:
    """Predict a reply for every record of a dataset and write them to ``out``.

    Args:
        model: Training output folder, Hugging Face model folder or ``--base-model`` value.
        dataset: Any dataset ``open_source`` reads; a final assistant message (the gold
            answer) is ignored, and records without one are fine.
        out: The predictions JSONL to write (replaced only when complete).
        schema: JSON schema (file or object) for every record; default the dataset's own.
        constrained: Constrain replies to the schema.
        batch_size: Prompts generated together.
        max_new_tokens: Generation budget per reply; default the run's (``run_budget``) or 256.
        limit: Only the first N records.
        threads: torch threads; default the cores not busy (``default_threads``).
        resume: Keep the complete rows of ``OUT.partial`` and decode the rest.
        data_format: ``--data-format`` of the dataset.
        allow_remote_images: Fetch http(s) images.
        allow_outside_paths: Allow image paths outside the dataset's folder.
        engine: ``hf`` (transformers, any model), ``onnxruntime-genai`` (a ``--format onnx``
            export) or ``vllm`` (a ``--format merged`` export, on a GPU).
        dtype: The ``hf`` engine's weights: ``float32`` or ``bfloat16``.
        grounded: Every string value a span of the record's source text
            (``inference.grounding``); needs ``constrained``.
        source_field: The record key holding the source text (else its user turns).
        calibration: The ``calibration.json`` to map confidences with; default the one
            beside the model, if any.
        chat_template: ``--chat-template``: render prompts with this template (a training
            run renders with the one it saved by default).
        review_at: Write ``needs_review`` per row for this precision (``prediction_row``);
            needs a calibration map with a threshold for it.

    Returns:
        ``{"examples", "new_tokens", "seconds", "cut", "max_new_tokens", "threads"}``.
    """
    if batch_size < 1 or (max_new_tokens is not None and max_new_tokens < 1):
        raise ValueError("--batch-size and --max-new-tokens must be at least 1")
    if grounded and not constrained:
        raise ValueError("--grounded constrains the reply's strings to its source: it cannot be combined with --no-constrained")
    grounding = source_field if grounded else None
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name")
    source = open_source(dataset, format=data_format, require_reply=False)
    n = min(len(source), limit) if limit is not None else len(source)
    if n == 0:
        raise DataError(f"--dataset {dataset}: no record to predict")
    samples = SampleView(source, n)
    threads = threads or default_threads()
    # compare trains again in this process after predicting: give its thread count back.
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, previous)
        out.parent.mkdir(parents=True, exist_ok=True)
        # One writer per predictions file: a second predict into it is refused, not interleaved.
        lock = FileLock(out.with_name(out.name + ".lock"), f"--out {out}").acquire()
        stack.callback(lock.release, remove=True)
        generate, processing = engine_generator(engine, model, threads, dtype)
        codec = ChatCodec.for_data(with_chat_template(processing, chat_template), dataset, allow_remote_images=allow_remote_images, allow_outside_paths=allow_outside_paths)
        if isinstance(schema, dict):
            codec.dataset_schema = schema
        elif schema is not None:
            codec.dataset_schema = ChatCodec.for_data(None, dataset, schema_file=schema).dataset_schema
        constraints = _check(codec, samples, constrained, grounding)
        budget = max_new_tokens or run_budget(model) or DEFAULT_BUDGET
        calibration_file = Path(calibration) if calibration is not None else Path(model).expanduser() / CALIBRATION_FILE
        cmap = CalibrationMap.load(calibration_file) if calibration is not None or calibration_file.is_file() else None
        if review_at is not None:
            if cmap is None:
                raise ValueError(f"--review-at needs a calibration map: none beside {model} (fit one with model-garden calibrate, or pass --calibration)")
            cmap.threshold(review_at)  # a precision the map has no threshold for fails here, before decoding

        # Decoded in order of prompt length (less padding per batch), each row written as
        # it comes; the file is put in dataset order once complete.
        partial = out.with_name(out.name + ".partial")
        done = _done_rows(partial) if resume else {}
        order = by_prompt_length(codec, samples, [i for i in range(n) if samples[i].line not in done])
        with partial.open("w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in done.values())
            fh.flush()

            def write(sample: Sample, reply: Reply) -> None:
                row = prediction_row(sample, reply, constrained=constrained, source_field=grounding, calibration=cmap, review_at=review_at)
                done[sample.line] = json.dumps(row, ensure_ascii=False)
                fh.write(done[sample.line] + "\n")
                fh.flush()

            stats = predict_samples(
                generate, codec, [samples[i] for i in order], write, constraints=[constraints[i] for i in order] if constrained else None,
                batch_size=batch_size, max_new_tokens=budget,
            )
            os.fsync(fh.fileno())
        complete = out.with_name(out.name + ".complete")
        complete.write_text("".join(done[samples[i].line] + "\n" for i in range(n)), encoding="utf-8")
        meta = {
            "dataset": str(dataset),
            "dataset_fingerprint": source.fingerprint(),
            "records": n,
            "model": str(model),
            "engine": engine,
            "dtype": dtype,
            "constrained": constrained,
            "grounded": grounded,
            "source_field": source_field,
            "calibration": str(calibration_file) if cmap is not None else None,
            # the threshold behind each row's needs_review (None: the map certified none)
            "review_at": None if review_at is None else {"precision": review_at, "threshold": cmap.threshold(review_at)},
            "max_new_tokens": budget,
            "cut": stats["cut"],
        }
        os.replace(complete, out)
        partial.unlink()
        out.with_name(out.name + ".meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return {**stats, "examples": n, "max_new_tokens": budget, "threads": threads}


if __name__ == "__main__":
    import sys
    import tempfile

    bundled = Path(__file__).resolve().parent.parent / "assets" / "example.jsonl"
    target = Path(tempfile.mkdtemp()) / "preds.jsonl"
    print(predict("smollm2-135m", bundled, target, max_new_tokens=96, limit=int(sys.argv[1]) if len(sys.argv) > 1 else 2))
    print(target.read_text(encoding="utf-8"))
