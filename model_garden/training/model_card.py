"""The model card of a run (``README.md`` in the output folder, as the Hugging Face Hub
expects) and ``--push-to-hub``.

The card says what the model is and how to use it safely: the base model, the data and
its fingerprint, the mask strategy with what it trained, the training options, the eval
results, and how to decode with the reply schema in Python and in an inference engine. A
model trained with JSON keys masked must be served with the grammar; the card says so.

Try it: train a run, then read ``OUTPUT/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi

from model_garden.models import public_name
from model_garden.training.config import TrainConfig

_SELECTIVE = ("moderate", "aggressive", "schema-forced", "custom")


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(cfg: TrainConfig, out: Path, stats: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The card's Markdown, with the Hub's YAML front matter."""
    base = public_name(cfg.model.base_model)
    adapter = (out / "adapter_config.json").is_file()
    front = {"base_model": base, "library_name": "peft" if adapter else "transformers", "tags": ["model-garden", "structured-output", "json"]}
    trained = stats.get("fraction_trained", {})
    rows = "\n".join(f"| {name} | {stats['tokens'].get(name, 0):,} | {_percent(share)} |" for name, share in sorted(trained.items()))
    warning = ""
    if cfg.mask.mask_strategy in _SELECTIVE and not cfg.mask.structural_weight and not cfg.mask.structural_weight_schedule:
        warning = (
            "\n> **Serve this model with the schema constraint.** It was trained with JSON scaffolding masked "
            f"(`{cfg.mask.mask_strategy}`), so without the grammar it does not write valid JSON (0% on SROIE in "
            "model-garden's measurements). Every recipe below applies the grammar.\n"
        )
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {out.name}

A {"LoRA adapter for" if adapter else "fine-tune of"} [{base}](https://huggingface.co/{base}) that answers with JSON,
trained with [model-garden](https://pypi.org/project/model-garden/).
{warning}
## Data

* training set: `{cfg.data.dataset or "records given in Python"}`, {stats.get("examples", 0):,} examples used, {len(stats.get("skipped", []))} skipped
* mask fingerprint (identical masks give identical fingerprints): `{stats.get("mask_fingerprint", "")[:16]}`
* evaluation set: `{cfg.data.eval_dataset or "none"}`

## What was trained

Mask strategy `{cfg.mask.mask_strategy}`{cfg.mask.details()}: the share of each reply token class that carried loss.

| class | tokens | trained |
| --- | ---: | ---: |
{rows}

## Training

{metrics.get("steps", "?")} steps, batch {cfg.optim.batch_size} x {cfg.optim.grad_accum}, lr {cfg.optim.lr} ({cfg.optim.lr_scheduler}), {"full fine-tuning" if cfg.model.full_finetune else f"LoRA r={cfg.lora.lora_r}, alpha {cfg.lora.lora_alpha}"}, seed {cfg.optim.seed}, bf16 autocast {metrics.get("bf16")}. The whole configuration is in `config.yaml`.

## Evaluation

{_evaluation(cfg, metrics)}
{_usage(out)}"""


def _evaluation(cfg: TrainConfig, metrics: dict[str, Any]) -> str:
    losses = metrics.get("eval_value_loss") or []
    if not losses:
        return "No evaluation set was given."
    lines = [f"* eval value loss (loss on the value tokens of the eval set): {losses[-1][1]:.4f} at step {losses[-1][0]} (step {losses[0][0]}: {losses[0][1]:.4f})"]
    decoded = metrics.get("decoded_eval") or []
    if decoded:
        step, last = decoded[-1]
        lines.append(
            f"* decoded under the schema, first {cfg.run.eval_generate} eval records, step {step}: JSON valid {_percent(last.get('json_valid'))}, "
            f"field accuracy {_percent(last.get('field_accuracy'))} (fields with a gold value: {_percent(last.get('field_accuracy_filled'))})"
        )
    return "\n".join(lines)


def _usage(out: Path) -> str:
    return f"""## Use it with the reply schema

Python (model-garden; the schema comes from the dataset, or `--schema`):

```bash
model-garden predict --model {out} --dataset records.jsonl --out preds.jsonl
```

An inference engine (ONNX Runtime GenAI on a CPU; the export carries `schema.json` with
the decoding layout as its `x-guidance` options, which llguidance engines honour):

```bash
model-garden export {out} --format onnx --out {out.name}-onnx
model-garden predict --model {out.name}-onnx --engine onnxruntime-genai --dataset records.jsonl --out preds.jsonl
```

See docs/deploy.md in model-garden for vLLM and llama.cpp.
"""


def write(cfg: TrainConfig, out: Path, stats: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """Write ``OUTPUT/README.md`` (over the template PEFT leaves there)."""
    path = out / "README.md"
    path.write_text(render(cfg, out, stats, metrics), encoding="utf-8")
    return path


def push(out: Path, repo_id: str, api: HfApi | None = None) -> str:
    """Upload the run folder (without checkpoints and logs) to the Hub as ``repo_id``;
    returns the commit's URL."""
    api = api or HfApi()
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(out), ignore_patterns=["checkpoints/*", "logs/*", "*.partial"])
    return str(getattr(info, "commit_url", info))


def load_stats(out: Path) -> dict[str, Any]:
    """``mask_stats.json`` of a run folder."""
    return json.loads((out / "mask_stats.json").read_text(encoding="utf-8"))
