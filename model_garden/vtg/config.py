"""``VTGConfig``: the data and prompt options of ``model-garden train-vtg``, on top of
``TrainConfig``'s, loadable from the same YAML file and saved with every run
(``vtg_config.yaml``, which ``predict-vtg`` reads to prompt the model as it was trained).

Precedence: dataclass defaults < ``--config FILE.yaml`` (keys of either config) < flags.

Nothing heavy is imported here, so the CLI can build its flags from these fields.

Try it: ``model-garden train-vtg --help`` lists them with their help texts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model_garden.training.config import TrainConfig, read_config_file

VTG_CONFIG_FILE = "vtg_config.yaml"
FRAME_LAYOUTS = ("video", "images")


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class VTGConfig:
    """Options of ``model-garden train-vtg`` on top of ``train``'s (flag = field name with dashes)."""

    annotations: str | None = _opt(None, "Training annotations: Charades-STA .txt (VID start end##query) or ActivityNet Captions .json")
    video_dir: str | None = _opt(None, "Folder of VIDEO_ID.mp4 (.mkv, .webm, ...) files or VIDEO_ID/ frame folders")
    durations: str | None = _opt(None, "Charades-STA durations CSV (id,length) of the training videos")
    eval_annotations: str | None = _opt(None, "Evaluation annotations (same formats); their answer loss is logged")
    eval_durations: str | None = _opt(None, "Durations CSV of the evaluation videos (default: --durations)")
    use_temporal_tokens: bool = _opt(False, "Answer with <|box_start|><s><e><|box_end|> time-bin tokens instead of [start, end] seconds")
    num_time_bins: int = _opt(100, "Temporal bins <0> ... <N-1> with --use-temporal-tokens")
    num_frames: int = _opt(8, "Frames sampled uniformly per video")
    random_templates: bool = _opt(True, "Vary the prompt template per sample (--no-random-templates: always the first)")
    template_seed: int | None = _opt(None, "Seed of the per-sample template choice (default: --seed)")
    prompt_template_file: str | None = _opt(None, "Text or YAML file of prompt templates with {query}, instead of the built-in ones")
    frames_as: str = _opt("video", "video (one video input) | images (one image per frame, after its time)")
    frame_fps: float | None = _opt(None, "Frame rate of VIDEO_ID/ frame folders (default: times from the file names)")

    def __post_init__(self) -> None:
        checks = [
            (self.num_frames >= 1, "--num-frames must be >= 1"),
            (self.num_time_bins >= 2, "--num-time-bins must be >= 2"),
            (self.frames_as in FRAME_LAYOUTS, f"--frames-as must be video or images, got {self.frames_as!r}"),
            (self.frame_fps is None or self.frame_fps > 0, "--frame-fps must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def dataset(self, annotations: str | Path, durations: str | Path | None, *, seed: int | None, random: bool) -> Any:
        """A ``VideoTemporalSFTDataset`` of an annotation file under these options."""
        from model_garden.vtg.dataset import VideoTemporalSFTDataset
        from model_garden.vtg.prompt_templates import load_templates

        if not self.video_dir:
            raise ValueError("--video-dir is required")
        return VideoTemporalSFTDataset(
            annotations,
            self.video_dir,
            use_temporal_tokens=self.use_temporal_tokens,
            use_random_templates=random,
            template_seed=seed,
            num_frames=self.num_frames,
            num_time_bins=self.num_time_bins,
            durations_file=durations,
            templates=load_templates(self.prompt_template_file) if self.prompt_template_file else None,
            frames_as=self.frames_as,
            frame_fps=self.frame_fps,
        )

    def save(self, path: Path) -> None:
        """Write the options as YAML."""
        path.write_text(yaml.safe_dump(dataclasses.asdict(self), sort_keys=False, allow_unicode=True), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> VTGConfig:
        """Read a ``vtg_config.yaml``.

        Raises:
            ValueError: naming the file and an unknown key.
        """
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown option {unknown[0]!r}")
        return cls(**values)


def load_vtg_config(path: str | Path | None, train_flags: dict[str, Any], vtg_flags: dict[str, Any]) -> tuple[TrainConfig, VTGConfig]:
    """Defaults, then a YAML file holding options of both configs, then the flags given (not None).

    Raises:
        ValueError: naming the file and an unknown key, or the flag with a bad value.
    """
    values = read_config_file(path, {"train": TrainConfig, "vtg": VTGConfig})
    values["train"].update({k: v for k, v in train_flags.items() if v is not None})
    values["vtg"].update({k: v for k, v in vtg_flags.items() if v is not None})
    return TrainConfig(**values["train"]), VTGConfig(**values["vtg"])
