"""``VTGConfig``: the data and prompt options of ``model-garden train-vtg``, on top of
``TrainConfig``'s, loadable from the same YAML file and saved with every run
(``vtg_config.yaml``, which ``predict-vtg`` reads to prompt the model as it was trained).

Precedence: dataclass defaults < ``--config FILE.yaml`` (keys of either config) < flags.
A TRL or Axolotl file is translated as ``train --config`` translates it
(``training.foreign``), the VTG keys standing beside; its dataset keys are refused, since
the videos and annotations come from ``--annotations`` and ``--video-dir``.

Try it: ``model-garden train-vtg --help`` lists them with their help texts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model_garden.options import ConfigError, build, read_yaml
from model_garden.training.config import TrainConfig, read_options
from model_garden.training.foreign import Translation
from model_garden.vtg.dataset import VideoTemporalSFTDataset
from model_garden.vtg.prompt_templates import load_templates

VTG_CONFIG_FILE = "vtg_config.yaml"
# train's data options: train-vtg reads its data from --annotations and --video-dir instead.
NOT_FOR_VTG = ("vision", "dataset", "eval_dataset", "data_format", "data_name", "data_split", "eval_split", "allow_remote_images", "allow_outside_paths")
FRAME_LAYOUTS = ("video", "images")


@dataclass
class VTGConfig:
    """Options of ``model-garden train-vtg`` on top of ``train``'s (flag = field name with dashes).

    Attributes:
        annotations: Training annotations: Charades-STA .txt (VID start end##query) or ActivityNet Captions .json.
        video_dir: Folder of VIDEO_ID.mp4 (.mkv, .webm, ...) files or VIDEO_ID/ frame folders.
        durations: Charades-STA durations CSV (id,length) of the training videos.
        eval_annotations: Evaluation annotations (same formats); their answer loss is logged.
        eval_durations: Durations CSV of the evaluation videos (default: --durations).
        use_temporal_tokens: Answer with <|box_start|><s><e><|box_end|> time-bin tokens instead of [start, end] seconds.
        num_time_bins: Temporal bins <0> ... <N-1> with --use-temporal-tokens.
        num_frames: Frames sampled uniformly per video.
        random_templates: Vary the prompt template per sample (--no-random-templates: always the first).
        template_seed: Seed of the per-sample template choice (default: --seed).
        prompt_template_file: Text or YAML file of prompt templates with {query}, instead of the built-in ones.
        frames_as: video (one video input) | images (one image per frame, after its time).
        frame_fps: Frame rate of VIDEO_ID/ frame folders (default: times from the file names).
    """

    annotations: str | None = None
    video_dir: str | None = None
    durations: str | None = None
    eval_annotations: str | None = None
    eval_durations: str | None = None
    use_temporal_tokens: bool = False
    num_time_bins: int = 100
    num_frames: int = 8
    random_templates: bool = True
    template_seed: int | None = None
    prompt_template_file: str | None = None
    frames_as: str = "video"
    frame_fps: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.num_frames >= 1, "--num-frames must be >= 1"),
            (self.num_time_bins >= 2, "--num-time-bins must be >= 2"),
            (self.frames_as in FRAME_LAYOUTS, f"--frames-as must be video or images, got {self.frames_as!r}"),
            (self.frame_fps is None or self.frame_fps > 0, "--frame-fps must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def dataset(self, annotations: str | Path, durations: str | Path | None, *, seed: int | None, random: bool) -> Any:
        """A ``VideoTemporalSFTDataset`` of an annotation file under these options."""
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
            ConfigError: naming the file, line and option.
        """
        values, lines = read_yaml(path)
        return build(cls, {str(k): v for k, v in values.items()}, {str(k): f"{path} line {lines.get(str(k), '?')}: " for k in values})


def load_vtg_config(
    path: str | Path | None,
    train_flags: dict[str, Any],
    vtg_flags: dict[str, Any],
    on_translate: Callable[[Translation], None] | None = None,
) -> tuple[TrainConfig, VTGConfig]:
    """Defaults, then a YAML file holding options of both configs (flat or grouped, the
    VTG ones under ``vtg:``; or a TRL or Axolotl file, translated and shown to
    ``on_translate``), then the flags given (not None).

    Raises:
        ConfigError: naming the file, line and option, or the flag with a bad value.
    """
    values, where, foreign = read_options(path, {**TrainConfig.groups(), "vtg": VTGConfig}, {**train_flags, **vtg_flags}, on_translate)
    # Only a translation is checked: a run's own saved config.yaml holds these options too (vision: true).
    for name in NOT_FOR_VTG if foreign else ():
        if name in foreign.values:
            raise ConfigError(f"{foreign.where[name]}train-vtg reads its data from --annotations and --video-dir, not --{name.replace('_', '-')}")
    vtg_names = {f.name for f in dataclasses.fields(VTGConfig)}
    vtg_values = {k: v for k, v in values.items() if k in vtg_names}
    train_values = {k: v for k, v in values.items() if k not in vtg_names}
    return TrainConfig.from_options(where, **train_values), build(VTGConfig, vtg_values, where)
