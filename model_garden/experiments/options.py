"""The options of ``model-garden compare`` and ``model-garden demo`` (their flags are
generated from these fields; nothing heavy is imported here).

Try it: ``model-garden compare --help``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from model_garden.masking.strategies import STRATEGIES

# constrained: the schema's grammar; grounded: also every string a span of the source; free: none.
DECODINGS = ("constrained", "grounded", "free")
_ARM_RE = re.compile(
    r"^(?P<strategy>[a-z-]+)(?:@(?:(?P<weight>[0-9.]+)|(?P<schedule>linear:[0-9.]+->[0-9.]+)))?(?:\+(?P<epochs>[0-9]+)ep)?$"
)


def parse_arm(arm: str) -> tuple[str, float | None, str | None, int | None]:
    """``STRATEGY``, ``STRATEGY@WEIGHT`` or ``STRATEGY@linear:A->B``, each optionally with
    ``+Nep`` (its own number of epochs), as ``(strategy, structural weight, schedule,
    epochs)``; None keeps the shared training option."""
    m = _ARM_RE.match(arm)
    if m is None or m["strategy"] not in STRATEGIES or (m["epochs"] is not None and int(m["epochs"]) < 1):
        raise ValueError(
            f"--strategies: {arm!r} is not STRATEGY, STRATEGY@WEIGHT or STRATEGY@linear:A->B, optionally followed by +Nep (N epochs >= 1), "
            f"with STRATEGY one of {', '.join(STRATEGIES)}"
        )
    weight = None
    if m["weight"] is not None:
        try:
            weight = float(m["weight"])
        except ValueError:
            raise ValueError(f"--strategies: {arm!r}: {m['weight']!r} is not a number") from None
    return m["strategy"], weight, m["schedule"], None if m["epochs"] is None else int(m["epochs"])


def arm_folder(arm: str) -> str:
    """A run folder name for an arm (no ``:`` or ``>``): ``moderate@linear:1.0->0.0`` is
    ``moderate@linear1.0to0.0``."""
    return arm.replace("->", "to").replace(":", "")


@dataclass
class CompareOptions:
    """What to compare.

    Attributes:
        strategies: Arms, comma-separated; the first is the baseline. An arm is a mask strategy, optionally with its structural weight (moderate@0.1) or schedule (moderate@linear:1.0->0.0), and optionally its own number of epochs (moderate@0.1+2ep).
        seeds: Seeds, comma-separated; one run per strategy and seed.
        out: Output folder (runs, report.md, plots).
        decodings: The final evaluation's decodings: constrained (the schema), grounded (the schema, every string a span of the record's source text) and/or free.
        calibration_dataset: A calibration split: each run predicts it with each constrained or grounded decoding, fits that decoding's confidence calibration map on it (model-garden calibrate) and applies the map to the eval predictions, whose report then measures review coverage at its 95% and 99% precision thresholds.
        test_dataset: The set the final decodings are judged on (default: --eval-dataset). Give one when training-time evaluations choose anything (--metric-for-best, --early-stopping-patience), so the reported set chooses nothing.
        predict_limit: Decode only the first N eval examples (default: all).
        predict_batch_size: Prompts decoded together.
        max_new_tokens: Generation budget per reply.
        target_loss: Eval value loss a run must reach for "steps to target" (default: the best value the baseline reaches with the same seed).
        cluster_by: Judged records that are not independent draws (receipts of one shop, pages of one document): the paired bootstrap resamples their clusters, each with all its records. A top-level key of every record (vendor) or a JSON Pointer into its gold reply (/company).
        report_only: Train and decode nothing: report the finished runs and list the missing ones.
    """

    strategies: list[str] = field(default_factory=lambda: ["none", "conservative", "moderate", "aggressive"])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    out: str = "outputs/compare"
    decodings: list[str] = field(default_factory=lambda: ["constrained", "free"])
    calibration_dataset: str | None = None
    test_dataset: str | None = None
    predict_limit: int | None = None
    predict_batch_size: int = 8
    max_new_tokens: int = 256
    target_loss: float | None = None
    cluster_by: str | None = None
    report_only: bool = False

    def __post_init__(self) -> None:
        if not self.strategies:
            raise ValueError("--strategies must name at least one strategy")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"--strategies has duplicates: {self.strategies}")
        for arm in self.strategies:
            parse_arm(arm)
        if not self.seeds:
            raise ValueError("--seeds must name at least one seed")
        for d in self.decodings:
            if d not in DECODINGS:
                raise ValueError(f"--decodings must be among {', '.join(DECODINGS)}; got {d!r}")
        if self.predict_batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("--predict-batch-size and --max-new-tokens must be at least 1")


LAUNCHERS = ("inline", "local", "slurm")


@dataclass
class LaunchOptions:
    """Where compare's runs execute (submitit; docs/scaling.md).

    Attributes:
        launcher: inline: one run after another in this process; local: each run its own process on this machine, several at once; slurm: each run a Slurm job. Finished runs are reused and the report is written here either way.
        arm_cpus: CPU cores (torch threads, training and decoding) of each run (default: inline keeps torch's own; local shares this machine's cores among the runs at once; slurm 8).
        parallel: Runs at once under a launcher (default: local as many as the cores hold at --arm-cpus each; slurm all).
        arm_mem_gb: Memory of each run's job, in GiB (slurm; default: the partition's).
        arm_gpus: GPUs of each run's job.
        arm_timeout_min: Wall-time limit of each run's job, in minutes; a run stopped by it resumes from its last checkpoint on the next compare.
        slurm_partition: The Slurm partition (default: the cluster's).
    """

    launcher: str = "inline"
    arm_cpus: int | None = None
    parallel: int | None = None
    arm_mem_gb: int | None = None
    arm_gpus: int = 0
    arm_timeout_min: int = 3 * 24 * 60
    slurm_partition: str | None = None

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {self.launcher!r}")
        for flag, value in (("--arm-cpus", self.arm_cpus), ("--parallel", self.parallel), ("--arm-mem-gb", self.arm_mem_gb), ("--arm-timeout-min", self.arm_timeout_min)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be at least 1; got {value}")
        if self.arm_gpus < 0:
            raise ValueError(f"--arm-gpus must be at least 0; got {self.arm_gpus}")


@dataclass
class DemoConfig:
    """Size of the demo.

    Attributes:
        out: Output folder.
        forms: Synthetic forms to generate (split 80/10/10).
        strategy: The selective arm compared with response-only loss (the default recipe's; docs/selective-loss.md).
        max_steps: Optimizer steps per run.
        batch_size: Examples per step.
        eval_examples: Held-out forms decoded at the end.
        seed: Seed of data, adapter initialisation and order.
        base_model: The model to fine-tune (the embedded SmolLM2-135M by default).
        max_new_tokens: Generation budget per decoded form.
        decodings: How the held-out forms are decoded: constrained (the schema) and/or grounded (every value copied from the form's text).
    """

    out: str = "outputs/demo"
    forms: int = 80
    strategy: str = "moderate@0.1"
    max_steps: int = 20
    batch_size: int = 2
    eval_examples: int = 8
    seed: int = 0
    base_model: str = "smollm2-135m"
    max_new_tokens: int = 320
    decodings: list[str] = field(default_factory=lambda: ["constrained", "grounded"])
