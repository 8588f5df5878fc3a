"""Selective loss end to end with the Python API: data, masks, training, constrained
decoding, evaluation.

Runs offline on CPU with the embedded SmolLM2-135M in a few minutes:

    python examples/selective_loss_training.py --out outputs/example --steps 20

For a vision-language model, use ``VisionLanguageTrainer("Qwen/Qwen2.5-VL-3B-Instruct",
...)`` and the ``vision/`` files instead of ``text/``; everything else is the same.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from model_garden.data.forms import make_forms
from model_garden.data.jsonl import JsonlDataset
from model_garden.evaluation import evaluate_files
from model_garden.inference.predict import predict
from model_garden.masking import MaskConfig, build_example
from model_garden.masking.inspect import render_rich
from model_garden.models import load_processing
from model_garden.vision_training import VisionLanguageTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/example"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-examples", type=int, default=8)
    args = parser.parse_args()
    console = Console()

    # 1. Data: synthetic French vehicle-registration forms (text transcriptions).
    make_forms(args.out / "forms", n=60, seed=0)
    train_file, test_file = args.out / "forms/text/train.jsonl", args.out / "forms/text/test.jsonl"

    # 2. Look at the mask before training: the notes' pattern trains only the extracted values.
    patterns = [r'"contents": "([^"]*)"']
    tokenizer = load_processing("smollm2-135m")
    example = build_example(tokenizer, JsonlDataset(train_file)[0].messages, MaskConfig("custom", semantic_patterns=tuple(patterns)))
    console.print(render_rich(tokenizer, example, prompt_tail=8))

    # 3. Train a LoRA adapter with selective loss (the notes' API).
    trainer = VisionLanguageTrainer("smollm2-135m", use_selective_loss=True, semantic_token_patterns=patterns)
    result = trainer.train(
        train_file,
        output_dir=args.out / "adapter",
        eval_dataset=str(test_file),
        max_steps=args.steps,
        batch_size=2,
        lr=1e-3,
        eval_steps=max(args.steps // 2, 1),
        eval_generate=4,  # decoded field accuracy on 4 test forms at each evaluation
        report_to="none",
        overwrite=True,  # the example may be run again into the same folder
    )
    console.print(f"value-token eval loss: {result.metrics['eval_value_loss']}")
    console.print(f"decoded during training: {result.metrics['decoded_eval']}")

    # 4. Decode with the schema (schema.json beside the data) and evaluate.
    preds = args.out / "preds.jsonl"
    predict(args.out / "adapter", test_file, preds, limit=args.eval_examples, batch_size=args.eval_examples)
    report = evaluate_files(preds, test_file, predicted_only=True)
    metrics = report["metrics"]
    console.print(json.dumps({k: metrics[k] for k in ("json_valid", "schema_valid", "field_accuracy", "f1", "cer")}, indent=2))


if __name__ == "__main__":
    main()
