"""``SelectiveLossSFTTrainer``: a transformers ``Trainer`` whose loss is the weighted,
chunked cross-entropy of ``loss.py``, normalised over the whole optimizer step.

* The normaliser is the sum of loss weights over every micro-batch of the accumulation
  window and, under data parallelism, every rank (transformers' ``num_items_in_batch``
  mechanism, counting weights instead of labels).
* The loss is computed inside the model's forward, at the output layer, so DDP, FSDP and
  DeepSpeed see an ordinary forward; the full logits are never built.
* Dynamic policies act per micro-batch before counting: ``structural_keep_prob`` (masked
  structural tokens re-enter the loss at random, seeded by run seed and step) and a
  structural-weight schedule.
* Evaluation reports ``eval_value_loss``: the token-weighted mean loss over the eval set's
  trained tokens (built with the value-only mask, the same yardstick for every strategy).
* Checkpoints are crash-safe: written into a staging folder and renamed into place when
  complete (``checkpoints.py``); a failed write raises ``CheckpointError``.
"""

from __future__ import annotations

import contextlib
import shutil
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from model_garden.masking.strategies import END_OF_TURN
from model_garden.training import checkpoints
from model_garden.training.loss import DEFAULT_CHUNK, weighted_lm_loss


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The output projection (``lm_head``) of a possibly wrapped (DDP, PEFT) model."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(model).__name__} has no output layer to compute the chunked loss on")
    config = getattr(model, "config", None)
    text_config = getattr(config, "get_text_config", lambda: config)()
    for attr in ("final_logit_softcapping", "logit_scale"):
        if getattr(text_config, attr, None):
            raise ValueError(f"{type(model).__name__} transforms its logits ({attr}); the chunked loss does not support it")
    return head


@contextlib.contextmanager
def loss_at_output_layer(head: torch.nn.Module, labels, weights, normaliser, chunk: int) -> Iterator[SimpleNamespace]:
    """While active, the output layer computes the weighted loss from its input and
    returns empty logits; ``box.loss`` holds the loss after the forward."""
    box = SimpleNamespace(loss=None)

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        box.loss = weighted_lm_loss(hidden, head, labels, weights, normaliser, chunk)
        # Empty logits, but tied to the loss: DDP looks for used parameters through the outputs.
        return hidden[..., :0] + box.loss.to(hidden.dtype) * 0

    head.forward = forward
    try:
        yield box
    finally:
        del head.forward


class EpochSeededLengthSampler(LengthGroupedSampler):
    """transformers' length-grouped order, drawn from ``seed + epoch`` rather than the
    global random state, so a resumed run sees the batches an uninterrupted one would
    (the trainer calls ``set_epoch`` before each epoch, as for its own seedable sampler)."""

    def __init__(self, batch_size: int, *, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class SelectiveLossSFTTrainer(Trainer):
    """Trainer for batches with ``labels`` and ``loss_weights`` (see the module docstring).

    Args:
        tokenizer: Accepted as in the notes; same as ``processing_class``.
        use_selective_loss: Kept for the notes' API; selection lives in the batch's weights.
        structural_keep_prob: Probability a masked structural token re-enters the loss.
        structural_schedule: ``(start, end)`` weight of structural tokens, linear over
            the run; overrides the weights the batch brought for them.
        loss_chunk_size: Rows projected to the vocabulary at a time.
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        tokenizer: Any = None,
        use_selective_loss: bool = True,
        structural_keep_prob: float = 0.0,
        structural_schedule: tuple[float, float] | None = None,
        loss_chunk_size: int = DEFAULT_CHUNK,
        decoded_eval: Callable[[Any], dict[str, float | None]] | None = None,
        **kwargs: Any,
    ):
        if tokenizer is not None:
            kwargs.setdefault("processing_class", tokenizer)
        self._staging: Path | None = None  # set while a checkpoint is saved
        super().__init__(*args, **kwargs)
        self.use_selective_loss = use_selective_loss
        self.structural_keep_prob = structural_keep_prob
        self.structural_schedule = structural_schedule
        self.loss_chunk_size = loss_chunk_size
        self.decoded_eval = decoded_eval
        self.model_accepts_loss_kwargs = True  # our compute_loss uses num_items_in_batch

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if self.args.train_sampling_strategy == "group_by_length" and lengths is not None:
            # The pre-pass measured every example already; no second pass over the data.
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths, seed=seed)
        return super()._get_train_sampler(train_dataset)

    # -- checkpoints ---------------------------------------------------------------
    def _get_output_dir(self, trial) -> str:
        # While a checkpoint is saved, transformers' run folder is the staging folder.
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """transformers' save, into ``.tmp-checkpoint-N/checkpoint-N`` (its rotation sees
        only that folder: a no-op), then published as ``checkpoint-N`` and only then older
        checkpoints rotated out, so the newest complete one is never deleted first."""
        run_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        staging = checkpoints.staging_folder(run_dir, step)
        if self.args.should_save:
            checkpoints.clear_staging(run_dir)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()  # no rank writes into a folder still being cleared
        checkpoints.inject_fault("start", step)
        self._staging = staging
        # A run resumed from a checkpoint written without one of today's stateful callbacks
        # (by an older model-garden) has no slot for it in the restored state, and
        # transformers' save indexes that slot (KeyError).
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, ExportableState):
                self.state.stateful_callbacks.setdefault(type(cb).__name__, {})
        try:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's files (its RNG state) are in
            if self.args.should_save:
                self._unstage_best_checkpoint(staging / final.name, final)
                checkpoints.publish(staging, final, step)
        except Exception as err:
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            failure = checkpoints.write_failure(final, err)
            if failure is None:
                raise
            raise failure from err
        finally:
            self._staging = None
        if self.args.should_save:
            rotate_checkpoints(str(run_dir), self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)

    def _unstage_best_checkpoint(self, staged: Path, final: Path) -> None:
        # transformers recorded the best checkpoint (load_best_model_at_end) by its staging path.
        if self.state.best_model_checkpoint == str(staged):
            self.state.best_model_checkpoint = str(final)
            self.state.save_to_json(str(staged / checkpoints.TRAINER_STATE))

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        checkpoints.inject_fault("after_weights", self.state.global_step)  # test hook; the weights are written
        super()._save_optimizer_and_scheduler(output_dir)

    # -- weights -------------------------------------------------------------------
    def _structural_weight_now(self) -> float | None:
        if self.structural_schedule is None:
            return None
        start, end = self.structural_schedule
        total = max(self.state.max_steps, 1)
        return start + (end - start) * min(self.state.global_step / total, 1.0)

    def apply_weight_policy(self, batch: dict[str, Any], micro_step: int) -> dict[str, Any]:
        """Fill in ``loss_weights`` and apply keep-probability and schedule to structural tokens."""
        labels = batch["labels"]
        if "loss_weights" not in batch:
            batch["loss_weights"] = (labels != -100).float()
        classes = batch.get("token_classes")
        weight_now = self._structural_weight_now()
        if classes is None or (self.structural_keep_prob == 0 and weight_now is None):
            return batch
        # Reply tokens (classes 1..9) whose weight the strategy set below 1.
        structural = (classes > 0) & (classes < END_OF_TURN) & (batch["loss_weights"] < 1.0)
        if weight_now is not None:
            on = structural if weight_now > 0 else torch.zeros_like(structural)
            batch["loss_weights"] = torch.where(structural, torch.full_like(batch["loss_weights"], weight_now), batch["loss_weights"])
            batch["labels"] = torch.where(on, batch["input_ids"], torch.where(structural, -100, labels))
        if self.structural_keep_prob > 0:
            seed = zlib.crc32(f"{self.args.seed}:{self.state.global_step}:{micro_step}:{self.args.process_index}".encode())
            gen = torch.Generator().manual_seed(seed)
            draw = torch.rand(structural.shape, generator=gen) < self.structural_keep_prob
            keep = structural & draw.to(structural.device)
            batch["labels"] = torch.where(keep, batch["input_ids"], batch["labels"])
            batch["loss_weights"] = torch.where(keep, torch.ones_like(batch["loss_weights"]), batch["loss_weights"])
        return batch

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = []
        for k in range(num_batches):
            try:
                batches.append(self.apply_weight_policy(next(epoch_iterator), k))
            except StopIteration:
                break
        return batches, self._get_num_items_in_batch(batches, device)

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        total = sum(_weight_sum(b) for b in batch_samples).to(device)
        if self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    # -- loss ----------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        weights = inputs.pop("loss_weights", None)
        if weights is None:
            weights = (labels != -100).float()
        inputs.pop("token_classes", None)
        if num_items_in_batch is None:
            num_items_in_batch = _weight_sum({"labels": labels, "loss_weights": weights})
        head = output_layer(model)
        with loss_at_output_layer(head, labels, weights, num_items_in_batch, self.loss_chunk_size) as box:
            outputs = model(**inputs, use_cache=False)
        loss = box.loss
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients over ranks
        return (loss, outputs) if return_outputs else loss

    # -- evaluation ----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataloader = self.get_eval_dataloader(eval_dataset)
        model = self.model
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=self.args.device)
        weight = torch.zeros((), device=self.args.device)
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            with self.autocast_smart_context_manager():
                total += self.compute_loss(model, batch, num_items_in_batch=1.0).detach().float()
            weight += _weight_sum(batch).to(total.device)
        if self.accelerator.num_processes > 1:
            # compute_loss multiplied each rank's sum by the number of processes
            total = self.accelerator.reduce(total / self.accelerator.num_processes, "sum")
            weight = self.accelerator.reduce(weight, "sum")
        metrics = {f"{metric_key_prefix}_value_loss": (total / weight.clamp_min(1e-8)).item()}
        if self.decoded_eval is not None:
            # Outside autocast, as predict decodes: the logged answers are predict's answers.
            decoded = self.decoded_eval(model)
            metrics.update({f"{metric_key_prefix}_{k}": v for k, v in decoded.items() if v is not None})
        if was_training:
            model.train()
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def _weight_sum(batch: dict[str, Any]) -> torch.Tensor:
    targets = batch["labels"][:, 1:]
    weights = batch.get("loss_weights")
    weights = (targets != -100).float() if weights is None else weights[:, 1:].float() * (targets != -100)
    return weights.sum()
