"""The options of ``model-garden predict`` (its flags are generated from these fields).

Try it: ``model-garden predict --help``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PredictOptions:
    """What to predict, with which model and engine.

    Attributes:
        model: Training output folder, Hugging Face model folder, a --base-model value, or an export (with --engine).
        dataset: Dataset (JSONL, parquet/arrow/json, save_to_disk folder); a final assistant reply is ignored.
        out: Predictions JSONL to write (replaced only when complete; OUT.meta.json beside it).
        schema: JSON Schema file; default: the dataset's schema.json, or the schema each record carries.
        constrained: Constrain replies to the schema (--no-constrained: decode freely).
        batch_size: Prompts generated together.
        max_new_tokens: Generation budget per reply (default: the run's longest training reply + 25% + 16, else 256).
        limit: Only the first N records.
        threads: torch (or ONNX Runtime) threads (default: the cores other processes leave free).
        resume: Continue OUT.partial, left by an interrupted run, from its last complete line.
        data_format: auto | jsonl | parquet | arrow | json | disk.
        allow_remote_images: Fetch http(s) images.
        allow_outside_paths: Allow image paths outside the dataset folder.
        engine: hf (transformers, any model) | onnxruntime-genai (a --format onnx export) | vllm (a --format merged export, GPU).
        dtype: float32 | bfloat16: the hf engine's weights; bfloat16 is faster on CPUs with AMX and on GPUs, and its replies may differ from float32's (docs/benchmarks.md).
        grounded: Copy every string value from the record's source text (a contiguous span; line breaks read as spaces); spans are written per value.
        source_field: The record key holding the source text for --grounded (default: 'source'; a record without it uses its user turns' text).
        chat_template: Render prompts with this template instead of the model's (a Jinja file or a name, as train's); a training run's own saved template is used by default.
        calibration: calibration.json mapping confidences to the probability of being right (default: the one beside the model, written by model-garden calibrate).
        review_at: Mark what a person should check to keep this precision (0.95 or 0.99) on the rest: each row gets needs_review, the JSON Pointers of the values below the calibration map's threshold ('' for a reply that is not one JSON object). Needs a calibration map.
    """

    model: str = ""
    dataset: str = ""
    out: str = "preds.jsonl"
    schema: str | None = None
    constrained: bool = True
    batch_size: int = 8
    max_new_tokens: int | None = None
    limit: int | None = None
    threads: int | None = None
    resume: bool = False
    data_format: str = "auto"
    allow_remote_images: bool = False
    allow_outside_paths: bool = False
    engine: str = "hf"
    dtype: str = "float32"
    grounded: bool = False
    source_field: str = "source"
    chat_template: str | None = None
    calibration: str | None = None
    review_at: float | None = None

    def __post_init__(self) -> None:
        if not self.model or not self.dataset:
            raise ValueError("--model and --dataset are required")
