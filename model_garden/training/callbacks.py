"""Trainer callbacks: a rich progress bar, a JSONL log, a checkpoint on SIGINT/SIGTERM, and a training clock."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from model_garden.progress import eta, log_interval, plain


class RichProgress(TrainerCallback):
    """Progress over optimizer steps with loss, eval value loss and tokens/s: a rich bar
    on a terminal, a plain line every ``MODEL_GARDEN_LOG_EVERY`` seconds in a log (CI,
    ``nohup``, a cluster job), where a bar would only show its last frame."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task = None
        self.fields = {"loss": "-", "eval": "-", "tps": "-"}
        self._t0 = 0.0
        self._tokens0 = 0
        self._step0 = 0
        self._last_line = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._t0, self._tokens0, self._step0 = time.perf_counter(), state.num_input_tokens_seen, state.global_step
        self._last_line = self._t0
        if plain(self.console):
            self.console.print(f"train: {state.global_step}/{state.max_steps} steps", soft_wrap=True)
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} · eval value loss {task.fields[eval]} · {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, **self.fields)

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        now = time.perf_counter()
        elapsed = now - self._t0
        if elapsed > 0 and state.num_input_tokens_seen:
            self.fields["tps"] = f"{(state.num_input_tokens_seen - self._tokens0) / elapsed:,.0f}"
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step, **self.fields)
        elif now - self._last_line >= log_interval() or state.global_step >= state.max_steps:
            self._last_line = now
            left = eta(state.global_step - self._step0, state.max_steps - self._step0, elapsed)
            self.console.print(
                f"train: {state.global_step}/{state.max_steps} steps · loss {self.fields['loss']} · eval value loss {self.fields['eval']} "
                f"· {self.fields['tps']} tok/s · {elapsed:.0f} s elapsed · ETA {left}",
                soft_wrap=True,
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if "loss" in logs:
            self.fields["loss"] = f"{logs['loss']:.4f}"
        if "eval_value_loss" in logs:
            self.fields["eval"] = f"{logs['eval_value_loss']:.4f}"
        if self.progress is not None:
            self.progress.update(self.task, **self.fields)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class JsonlLog(TrainerCallback):
    """Append every log record (with its step) to ``path``; the run's machine-readable history.

    At train begin the file is cut back to the records up to the state's step: a run
    resumed from a checkpoint logs the steps after it again, and they must appear once."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not (state.is_world_process_zero and self.path.is_file()):
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if record.get("step", 0) <= state.global_step:
                kept.append(line + "\n")
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text("".join(kept), encoding="utf-8")
        os.replace(partial, self.path)  # a crash now leaves the old file or the new one, whole

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class SaveOnSignal(TrainerCallback):
    """On SIGINT or SIGTERM, finish the current step, save a checkpoint, and stop.

    A second signal restores the default handler, so a user can still force an exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.received = signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_train_begin(self, args, state, control, **kwargs):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class TrainClock(TrainerCallback, ExportableState):
    """Seconds spent training, over every sitting of a run.

    Checkpoints keep the count (transformers saves an ``ExportableState`` callback's state in
    ``trainer_state.json`` and restores it on resume), so a resumed run reports its whole
    training time, not only the time since the resume.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._since = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds, self._since = self.total(), None

    def total(self) -> float:
        return self.seconds + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def state(self) -> dict:
        return {"args": {}, "attributes": {"seconds": self.total()}}
