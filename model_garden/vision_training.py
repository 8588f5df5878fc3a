"""``VisionLanguageTrainer``: the notes' object API over ``model_garden.training.run``.

    from model_garden.vision_training import VisionLanguageTrainer

    trainer = VisionLanguageTrainer(
        base_model="Qwen/Qwen2.5-VL-3B-Instruct",          # or a local folder
        use_selective_loss=True,
        semantic_token_patterns=[r'"contents":\\s*"([^"]*)"'],
    )
    trainer.train("forms/vision/train.jsonl", output_dir="models/form-extractor", epochs=1)

It works for text models too (``vision=False`` is detected from the model). Everything it
does is also available as ``model-garden train-vision`` with the same options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_garden.data.jsonl import JsonlDataset
from model_garden.evaluation.decoded import decoded_eval_factory
from model_garden.data.sources import open_source
from model_garden.models import is_processor, is_vision_model, load_model, load_processing, resolve_model, text_tokenizer
from model_garden.training.config import TrainConfig
from model_garden.training.run import TrainResult, train


class VisionLanguageTrainer:
    """Fine-tune a vision-language model with response-only or selective loss.

    Args:
        base_model: Alias, local folder, ``.gguf`` file or hub id.
        max_seq_length: Truncate examples to this many tokens.
        load_in_4bit: QLoRA: a 4-bit NF4 base (a CUDA GPU with bitsandbytes; refused
            with a clear message elsewhere).
        dtype: Unused on CPU (bf16 autocast is chosen automatically); kept for the notes' API.
        use_selective_loss: Mask JSON structure (conservative) or, with patterns, train
            only the patterns' capture groups.
        semantic_token_patterns: Regexes for the ``custom`` strategy.
        **options: Any other ``TrainConfig`` field (``mask_strategy``, ``lora_r``, ...).
    """

    def __init__(
        self,
        base_model: str,
        max_seq_length: int = 2048,
        load_in_4bit: bool = False,
        dtype: Any = None,
        use_selective_loss: bool = False,
        semantic_token_patterns: list[str] | None = None,
        **options: Any,
    ):
        self.base_model = base_model
        self.dtype = dtype
        self.options = dict(
            base_model=base_model,
            max_length=max_seq_length,
            use_selective_loss=use_selective_loss,
            load_in_4bit=load_in_4bit,
            semantic_patterns=list(semantic_token_patterns or []),
            **options,
        )
        self.model = self.processor = None

    @property
    def use_selective_loss(self) -> bool:
        return bool(self.options["use_selective_loss"])

    @property
    def semantic_patterns(self) -> list[str]:
        return list(self.options["semantic_patterns"])

    def load_model(self) -> tuple[Any, Any]:
        """Load the model and its processor (or tokenizer); optional, ``train`` does it."""
        vision = is_vision_model(resolve_model(self.base_model))
        self.processor = load_processing(self.base_model, vision=vision)
        self.model = load_model(self.base_model, vision=vision)
        return self.model, self.processor

    @property
    def tokenizer(self) -> Any:
        return text_tokenizer(self.processor) if self.processor is not None else None

    def load_dataset(self, path: str | Path) -> JsonlDataset | Any:
        """Open a dataset (JSONL streamed, never loaded whole; parquet/arrow/json files or
        folders, a save_to_disk folder) as a sequence of samples."""
        return open_source(path)

    def config(self, dataset: str | Path, output_dir: str | Path, **overrides: Any) -> TrainConfig:
        """The ``TrainConfig`` a ``train`` call would run."""
        if self.processor is not None:
            vision = is_processor(self.processor)
        else:
            vision = is_vision_model(resolve_model(self.base_model))
        return TrainConfig.from_options(**{**self.options, "dataset": str(dataset), "output": str(output_dir), "vision": vision, **overrides})

    def train(self, dataset: str | Path, output_dir: str | Path = "outputs/run", **overrides: Any) -> TrainResult:
        """Train on a JSONL file; ``overrides`` are ``TrainConfig`` fields (``epochs``,
        ``max_steps``, ``batch_size``, ``eval_dataset``, ...)."""
        cfg = self.config(dataset, output_dir, **overrides)
        if self.model is not None:
            return train(cfg, model=self.model, processing=self.processor, decoded_eval_factory=decoded_eval_factory)
        return train(cfg, decoded_eval_factory=decoded_eval_factory)
