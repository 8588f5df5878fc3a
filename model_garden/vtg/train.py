"""Fine-tune a video LLM for temporal grounding: the engine of ``model-garden train-vtg``.

``train_vtg`` loads the model and its processor (Qwen2-VL / Qwen2.5-VL; video input
without torchvision through ``model_garden.vision_compat``), adds the temporal tokens
when asked (``model_garden.vtg.temporal_tokens``), reads the annotations into a
``VideoTemporalSFTDataset`` and hands everything to ``model_garden.training.run.train``:
the same trainer, LoRA, checkpoints, resume, progress bar and logs as ``model-garden
train``. The loss is response-only: the answer and its end-of-turn token are trained;
prompt, video tokens and padding are not (see ``model_garden.vtg.collate``).

New tokens and LoRA: an adapter freezes the embeddings, so the rows of ``<0>`` ...
``<N-1>`` would keep their initial values, and the adapter would not carry them (a fresh
copy of the base model has other values in those rows). Their rows are therefore made
trainable with PEFT's trainable tokens and saved, as full values, in the adapter; a
model that ties its output layer to its embeddings gets the same rows there.

The output folder is ``train``'s (adapter, processor with the new tokens, config.yaml,
logs, checkpoints) plus ``vtg_config.yaml``, which ``model-garden predict-vtg`` reads to
prompt the model as it was trained.

Try it (tests/test_vtg_training.py builds such a tiny model folder and videos)::

    model-garden train-vtg --base-model QWEN2_VL_DIR --annotations charades_sta_train.txt \\
        --durations durations_train.csv --video-dir videos/ --use-temporal-tokens --max-steps 100
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rich.console import Console

from model_garden.models import is_processor, is_vision_model, load_model, load_processing, resolve_model
from model_garden.training.config import TrainConfig
from model_garden.training.run import train
from model_garden.vtg.config import VTG_CONFIG_FILE, VTGConfig
from model_garden.vtg.dataset import VideoTemporalSFTDataset
from model_garden.vtg.temporal_tokens import BOX_END, BOX_START, add_temporal_tokens


def _check_videos(dataset: VideoTemporalSFTDataset, flag: str) -> None:
    """Fail before any model is loaded if a row has no video (listing a few)."""
    missing = []
    for i in range(len(dataset)):
        try:
            dataset.video_path(i)
        except FileNotFoundError as exc:
            missing.append(str(exc))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise FileNotFoundError(f"{flag}: {len(missing)} of {len(dataset)} rows have no video: " + "; ".join(missing[:3]) + more)


def train_vtg(
    cfg: TrainConfig,
    vtg: VTGConfig,
    *,
    model: Any = None,
    processor: Any = None,
    console: Console | None = None,
    callbacks: list | None = None,
) -> Any:
    """Train a temporal grounding model; see the module docstring.

    Args:
        cfg: The training options (``model-garden train``'s).
        vtg: The data and prompt options.
        model: An already loaded vision-language model instead of ``cfg.base_model``.
        processor: Its processor (required with ``model``).
        console: Where progress and tables go.
        callbacks: Extra ``TrainerCallback`` objects.

    Returns:
        ``model_garden.training.run.TrainResult``.
    """
    console = console or Console(stderr=True)
    if not vtg.annotations:
        raise ValueError("--annotations is required")
    if (model is None) != (processor is None):
        raise ValueError("pass both model and processor, or neither")
    cfg = cfg.replace(vision=True)
    seed = cfg.optim.seed if vtg.template_seed is None else vtg.template_seed
    train_data = vtg.dataset(vtg.annotations, vtg.durations, seed=seed, random=vtg.random_templates)
    console.print(train_data.report.summary())
    _check_videos(train_data, "--annotations")
    eval_data = None
    if vtg.eval_annotations:
        eval_data = vtg.dataset(vtg.eval_annotations, vtg.eval_durations or vtg.durations, seed=seed, random=vtg.random_templates)
        console.print(eval_data.report.summary())
        _check_videos(eval_data, "--eval-annotations")

    if model is None:
        path = resolve_model(cfg.model.base_model)
        if not is_vision_model(path):
            raise ValueError(f"--base-model {cfg.model.base_model} is a text model; train-vtg needs a video-language model (Qwen2-VL, Qwen2.5-VL)")
        # The adapter records where its base model is; an absolute path works from any folder.
        path = str(Path(path).resolve()) if Path(path).is_dir() else path
        processor, model = load_processing(path, vision=True), load_model(path, vision=True)
    if not is_processor(processor):
        raise ValueError(f"--base-model {cfg.model.base_model}: train-vtg needs a vision-language processor, got {type(processor).__name__}")
    added: list[int] = []
    if vtg.use_temporal_tokens:
        bins = add_temporal_tokens(processor, model, vtg.num_time_bins)
        boxes = processor.tokenizer.convert_tokens_to_ids([BOX_START, BOX_END])
        added = [*bins, *boxes]
    return train(
        cfg,
        console=console,
        callbacks=callbacks,
        model=model,
        processing=processor,
        train_records=train_data,
        eval_records=eval_data,
        trainable_token_ids=added,
        on_start=lambda out: dataclasses.replace(vtg, template_seed=seed).save(out / VTG_CONFIG_FILE),
    )
