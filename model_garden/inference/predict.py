"""Predict replies for a chat dataset, greedily, with schema-constrained decoding by default.

Each record's prompt is every message before its final assistant reply, rendered with
the model's chat template; the reply is generated in batches (left-padded) and written
to a JSONL file, one line per record in dataset order::

    {"line": 12, "output": "{\\"Marque\\": \\"PEUGEOT\\", ...}", "constrained": true, "new_tokens": 41}

Lines are flushed batch by batch, so an interrupted run keeps what it finished.

The model is a training output folder (a LoRA adapter is merged into its base model), a
plain Hugging Face model folder, or any ``--base-model`` value. The schema comes from
``--schema``, else from the dataset (``schema.json`` beside it, or the schema each
record's prompt carries: ``model_garden.data.schema.schema_for``).

Try it: ``python -m model_garden.inference.predict`` predicts the bundled example with
the embedded SmolLM2 and prints the replies.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from model_garden.data.images import ImagePolicy, load_image
from model_garden.data.jsonl import JsonlDataset, Record
from model_garden.data.schema import load_schema, schema_for
from model_garden.inference.constrained import json_schema_processor
from model_garden.masking import is_processor, render_prompt, text_tokenizer
from model_garden.models import is_vision_model, load_model, load_processing, resolve_model


def load_for_inference(spec: str | Path) -> tuple[Any, Any]:
    """Load a model and its tokenizer or processor for generation.

    Args:
        spec: A folder holding a PEFT adapter (``adapter_config.json``; its base model may
            be a folder or a ``--base-model`` alias), a Hugging Face model folder, or any
            ``--base-model`` value.

    Returns:
        ``(model, tokenizer_or_processor)``, the model in eval mode with any adapter merged.
    """
    path = Path(spec).expanduser()
    adapter = path / "adapter_config.json"
    if not adapter.is_file():
        resolved = resolve_model(spec)
        vision = is_vision_model(resolved)
        return load_model(resolved, vision=vision).eval(), load_processing(resolved, vision=vision)
    from peft import PeftModel

    base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter}: no base_model_name_or_path, so the base model is unknown")
    base = resolve_model(base)
    vision = is_vision_model(base)
    # Training saves the tokenizer or processor beside the adapter; otherwise use the base's.
    has_own = any((path / f).is_file() for f in ("tokenizer_config.json", "processor_config.json"))
    processing = _load_local(path, vision) if has_own else load_processing(base, vision=vision)
    model = load_model(base, vision=vision)
    vocab = len(text_tokenizer(processing))
    if vocab > model.get_input_embeddings().weight.shape[0]:
        # Tokens added in training (temporal tokens) need their rows before the adapter fills them.
        model.resize_token_embeddings(vocab, mean_resizing=False)
    model = PeftModel.from_pretrained(model, path).merge_and_unload()
    return model.eval(), processing


def _load_local(path: Path, vision: bool) -> Any:
    # load_processing() resolves --base-model values, which needs a config.json this folder lacks.
    if vision:
        from model_garden.vision_compat import load_vision_processor

        return load_vision_processor(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def logit_width(model: Any) -> int:
    """Number of logits the model produces per step (its output embedding rows)."""
    return model.get_output_embeddings().weight.shape[0]


def generate_batch(
    model: Any,
    processing: Any,
    prompts: list[str],
    *,
    images: list[list[Any]] | None = None,
    schemas: list[dict] | None = None,
    max_new_tokens: int = 256,
    videos: list[list[Any]] | None = None,
    processor_kwargs: dict[str, Any] | None = None,
) -> list[tuple[str, int]]:
    """Greedily generate one reply per prompt.

    Args:
        model: A causal LM or image-text-to-text model.
        processing: Its tokenizer or processor.
        prompts: Rendered prompts (ending with the assistant header).
        images: Per prompt, the PIL images its template refers to (vision models).
        schemas: Per prompt, the JSON schema to constrain the reply to; ``None`` decodes
            freely.
        max_new_tokens: Generation budget per reply.
        videos: Per prompt, its videos (each a list of frames), for video-language models.
        processor_kwargs: Extra processor arguments for the whole batch (e.g. the videos'
            ``video_metadata``, in prompt order).

    Returns:
        Per prompt, ``(reply text without special tokens, tokens generated before EOS)``.
    """
    from transformers import LogitsProcessorList

    tokenizer = text_tokenizer(processing)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = model.generation_config.eos_token_id
    eos = tokenizer.eos_token_id if eos is None else eos
    eos_ids = set(eos) if isinstance(eos, list) else {eos}
    kwargs: dict[str, Any] = {"padding": True, "padding_side": "left", "add_special_tokens": False, "return_tensors": "pt"}
    if is_processor(processing):
        if images and any(images):
            kwargs["images"] = images
        if videos and any(videos):
            kwargs["videos"] = [video for per_prompt in videos for video in per_prompt]
        enc = processing(text=prompts, **kwargs, **(processor_kwargs or {}))
    else:
        enc = processing(prompts, **kwargs)
    processors = LogitsProcessorList()
    if schemas is not None:
        processors.append(json_schema_processor(processing, schemas, logit_width(model), len(prompts), eos_token_id=eos))
    with torch.inference_mode():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=pad,
            logits_processor=processors,
        )
    replies = []
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        n = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
        replies.append((tokenizer.decode(row[:n], skip_special_tokens=True), n))
    return replies


def _record_schema(dataset: Path, record: Record, explicit: dict | None, where: str) -> dict:
    if explicit is not None:
        return explicit
    schema = schema_for(dataset, record)
    if schema is None:
        raise ValueError(
            f"{where}: no JSON schema for constrained decoding (the dataset carries none); "
            "pass --schema FILE, or --no-constrained to decode freely"
        )
    return schema


def predict(
    model: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    schema: str | Path | dict | None = None,
    constrained: bool = True,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    limit: int | None = None,
) -> dict[str, float]:
    """Predict a reply for every record of a dataset and write them to ``out``.

    Args:
        model: Training output folder, Hugging Face model folder or ``--base-model`` value.
        dataset: OpenAI chat JSONL; a final assistant message (the gold answer) is ignored.
        out: The predictions JSONL to write.
        schema: JSON schema (file or object) for every record; default the dataset's own.
        constrained: Constrain replies to the schema.
        batch_size: Prompts generated together.
        max_new_tokens: Generation budget per reply.
        limit: Only the first N records.

    Returns:
        ``{"examples", "new_tokens", "seconds"}``.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be at least 1")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    dataset = Path(dataset)
    data = JsonlDataset(dataset)
    explicit = load_schema(schema) if isinstance(schema, (str, Path)) else schema
    n = min(len(data), limit) if limit is not None else len(data)
    net, processing = load_for_inference(model)
    multimodal = is_processor(processing)
    policy = ImagePolicy(base_dir=dataset.resolve().parent)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = [TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    total_tokens, start = 0, time.perf_counter()
    with out.open("w", encoding="utf-8") as fh, Progress(*columns) as progress:
        task = progress.add_task("predict", total=n, speed="")
        for lo in range(0, n, batch_size):
            idx = range(lo, min(lo + batch_size, n))
            records = [data[i] for i in idx]
            prompts, images = [], []
            for i, record in zip(idx, records):
                text, conv = render_prompt(processing, record.messages, multimodal=multimodal, example=data.where(i))
                prompts.append(text)
                images.append([load_image(ref, where=data.where(i), policy=policy) for ref in conv.images])
            schemas = [_record_schema(dataset, r, explicit, data.where(i)) for i, r in zip(idx, records)] if constrained else None
            replies = generate_batch(net, processing, prompts, images=images, schemas=schemas, max_new_tokens=max_new_tokens)
            for record, (reply, new_tokens) in zip(records, replies):
                row = {"line": record.line, "output": reply, "constrained": constrained, "new_tokens": new_tokens}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                total_tokens += new_tokens
            fh.flush()
            speed = total_tokens / (time.perf_counter() - start)
            progress.update(task, advance=len(records), speed=f"{speed:.1f} tokens/s")
    return {"examples": n, "new_tokens": total_tokens, "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    import sys
    import tempfile

    from model_garden.cli.common import BUNDLED_EXAMPLE

    target = Path(tempfile.mkdtemp()) / "preds.jsonl"
    print(predict("smollm2-135m", BUNDLED_EXAMPLE, target, max_new_tokens=96, limit=int(sys.argv[1]) if len(sys.argv) > 1 else 2))
    print(target.read_text(encoding="utf-8"))
