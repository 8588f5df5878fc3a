"""Qwen2-VL / Qwen2.5-VL video input without torchvision.

transformers' ``Qwen2VLVideoProcessor`` is built on torchvision, which does not work
here, and ``Qwen2VLProcessor`` / ``Qwen2_5_VLProcessor`` refuse to be built without
*some* video processor, so ``AutoProcessor.from_pretrained`` fails on any Qwen-VL folder.
This module supplies the missing piece:

* ``QwenVideoProcessorPil`` produces the same tensors as the torchvision processor from
  decoded frames with PIL and numpy: one ``smart_resize`` size per video,
  CLIP-normalised, padded to a multiple of ``temporal_patch_size`` by repeating the last
  frame, cut into ``(grid_t * grid_h * grid_w, 3 * t * p * p)`` patches in the model's
  order. It takes frames, not files (decode them with PyAV, ``model_garden.vtg.video``).
  It is saved as the ``Qwen2VLVideoProcessor`` it stands in for, so a saved folder loads
  the torchvision processor on machines that have it.
* ``load_vision_processor(path)`` is ``AutoProcessor.from_pretrained(path, backend="pil")``,
  which fails for want of torchvision on a Qwen-VL folder; for those it builds the processor from
  the PIL image processor, the folder's tokenizer and chat template, and a
  ``QwenVideoProcessorPil`` with the folder's video settings (``processor_config.json``'s
  ``video_processor``, else ``video_preprocessor_config.json``, else the image settings in
  ``preprocessor_config.json``, as transformers itself falls back).

The sampling rate: Qwen2.5-VL places video tokens in time with ``second_per_grid_ts =
temporal_patch_size / fps``, and a frames-in processor cannot know the rate frames were
taken at. Pass it per video as transformers' ``video_metadata`` (``sampled_fps`` is read
from it; the torchvision processor honours the same argument) or ``fps``; otherwise the
processor's ``fps`` setting is assumed.

Try it: ``python -m model_garden.vision_compat`` patchifies five frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata, make_batched_metadata, make_batched_videos

# Qwen2VLVideoProcessor's own defaults (pixels per frame).
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 28 * 28, 768 * 28 * 28
QWEN_PROCESSORS = {"qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}


def export_video_processor_mixin() -> None:
    """Make ``transformers.VideoProcessorMixin`` resolvable without torchvision.

    ``ProcessorMixin`` checks sub-processor classes by name on the ``transformers``
    module; without torchvision the name is not exported, so no processor with a video
    slot (Qwen2-VL, Qwen2.5-VL, SmolVLM) can be constructed, even with a valid one.
    """
    # transformers' names are looked up when called, not when this module loads: the order
    # in which its lazy auto modules are imported, relative to this export, matters.
    import transformers

    if not hasattr(transformers, "VideoProcessorMixin"):
        transformers.VideoProcessorMixin = VideoProcessorMixin


class QwenVideoProcessorPil(VideoProcessorMixin):
    """Qwen2-VL / Qwen2.5-VL video inputs from frames (PIL images or ``HxWx3`` arrays).

    Args:
        min_pixels: Fewest pixels per frame after resizing.
        max_pixels: Most pixels per frame after resizing.
        fps: Sampling rate assumed for videos given without ``fps`` or ``video_metadata``.
        patch_size: Vision patch side.
        temporal_patch_size: Frames per temporal patch.
        merge_size: Patches merged per side into one token.
        image_mean: Normalisation mean per channel.
        image_std: Normalisation standard deviation per channel.
    """

    model_input_names = ["pixel_values_videos", "video_grid_thw"]

    def __init__(
        self,
        min_pixels: int = VIDEO_MIN_PIXELS,
        max_pixels: int = VIDEO_MAX_PIXELS,
        fps: float = 2.0,
        patch_size: int = 14,
        temporal_patch_size: int = 2,
        merge_size: int = 2,
        image_mean: tuple[float, ...] = tuple(OPENAI_CLIP_MEAN),
        image_std: tuple[float, ...] = tuple(OPENAI_CLIP_STD),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.min_pixels, self.max_pixels, self.fps = min_pixels, max_pixels, fps
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.image_mean, self.image_std = list(image_mean), list(image_std)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> QwenVideoProcessorPil:
        """Build from a saved Qwen2-VL video (or image) processor configuration.

        ``min_pixels`` / ``max_pixels`` win over ``size``, as in ``Qwen2VLVideoProcessor``;
        keys that do not apply to frames (sampling, resample filter, ...) are ignored.
        """
        size = settings.get("size") or {}
        kwargs = {
            "min_pixels": settings.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels"),
            "max_pixels": settings.get("max_pixels") or size.get("longest_edge") or size.get("max_pixels"),
        }
        for key in ("fps", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std"):
            kwargs[key] = settings.get(key)
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """The settings as ``Qwen2VLVideoProcessor`` saves them (so torchvision machines load that)."""
        return {
            "video_processor_type": "Qwen2VLVideoProcessor",
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "fps": self.fps,
            "patch_size": self.patch_size,
            "temporal_patch_size": self.temporal_patch_size,
            "merge_size": self.merge_size,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
            "rescale_factor": 1 / 255,
            "resample": int(Image.BICUBIC),
        }

    def _metadata(self, videos: list, fps: Any, video_metadata: Any) -> list[VideoMetadata]:
        if video_metadata is not None:
            return make_batched_metadata(videos, video_metadata)
        rates = list(fps) if isinstance(fps, (list, tuple)) else [fps or self.fps] * len(videos)
        if len(rates) != len(videos):
            raise ValueError(f"{len(rates)} fps values for {len(videos)} videos; pass one per video")
        return [VideoMetadata(total_num_frames=len(v), fps=r, frames_indices=list(range(len(v)))) for v, r in zip(videos, rates)]

    def __call__(
        self,
        videos: Any,
        return_tensors: str | None = None,
        fps: float | list[float] | None = None,
        video_metadata: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Patchify videos.

        Args:
            videos: One video (a list of frames or a ``T x H x W x 3`` array) or a list of them.
            return_tensors: ``"pt"``, ``"np"`` or ``None``.
            fps: The rate each video's frames were sampled at (one number or one per video).
            video_metadata: transformers' per-video metadata; its ``sampled_fps`` wins over ``fps``.
            **kwargs: The processor's other video options, which do not apply to frames.
        """
        p, t, m = self.patch_size, self.temporal_patch_size, self.merge_size
        mean, std = np.asarray(self.image_mean, dtype=np.float32), np.asarray(self.image_std, dtype=np.float32)
        videos = make_batched_videos(videos)
        patches, grids = [], []
        for frames in videos:
            frames = [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in frames]
            width, height = frames[0].size
            h, w = smart_resize(height, width, factor=p * m, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            clip = np.stack([np.asarray(f.convert("RGB").resize((w, h), Image.BICUBIC), dtype=np.float32) for f in frames])
            clip = ((clip / 255.0 - mean) / std).transpose(0, 3, 1, 2)
            if pad := -len(clip) % t:
                clip = np.concatenate([clip, np.repeat(clip[-1:], pad, axis=0)])
            gt, gh, gw = len(clip) // t, h // p, w // p
            x = clip.reshape(gt, t, 3, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
            patches.append(x.reshape(gt * gh * gw, 3 * t * p * p))
            grids.append([gt, gh, gw])
        out = BatchFeature(
            {"pixel_values_videos": np.concatenate(patches), "video_grid_thw": np.asarray(grids, dtype=np.int64)},
            tensor_type=return_tensors,
        )
        out["video_metadata"] = self._metadata(videos, fps, video_metadata)
        return out

    def get_num_of_video_patches(self, num_frames: int, height: int, width: int, videos_kwargs: dict | None = None) -> int:
        """Patches for a video of this size (what the processor counts tokens with)."""
        p, m = self.patch_size, self.merge_size
        h, w = smart_resize(height, width, factor=p * m, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return -(-num_frames // self.temporal_patch_size) * (h // p) * (w // p)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def qwen_processor_name(path: str | Path) -> str | None:
    """``Qwen2VLProcessor`` / ``Qwen2_5_VLProcessor`` if the folder holds a Qwen-VL model or
    processor, else ``None``."""
    path = Path(path)
    for name in ("processor_config.json", "preprocessor_config.json"):
        declared = _read_json(path / name).get("processor_class")
        if declared in QWEN_PROCESSORS.values():
            return declared
    return QWEN_PROCESSORS.get(_read_json(path / "config.json").get("model_type"))


def load_qwen_processor(path: str | Path) -> Any:
    """A Qwen2-VL / Qwen2.5-VL processor from a saved folder, with ``QwenVideoProcessorPil``.

    Raises:
        ValueError: the folder holds no Qwen-VL model or processor.
    """
    # Imported before export_video_processor_mixin() runs, as that export requires.
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    path = Path(path)
    name = qwen_processor_name(path)
    if name is None:
        raise ValueError(f"{path}: not a Qwen2-VL / Qwen2.5-VL folder (no Qwen processor_class or model_type)")
    processor_cls = getattr(transformers, name)
    processor_dict, _ = processor_cls.get_processor_dict(str(path))
    settings = (
        processor_dict.get("video_processor")
        or _read_json(path / "video_preprocessor_config.json")
        or _read_json(path / "preprocessor_config.json")
    )
    export_video_processor_mixin()
    return processor_cls(
        image_processor=AutoImageProcessor.from_pretrained(str(path), backend="pil"),
        tokenizer=AutoTokenizer.from_pretrained(str(path)),
        video_processor=QwenVideoProcessorPil.from_settings(settings),
        chat_template=processor_dict.get("chat_template"),
    )


def load_vision_processor(path: str | Path) -> Any:
    """``AutoProcessor`` with PIL image processors; for Qwen-VL folders on a machine
    without torchvision, ``load_qwen_processor``.

    The choice is made up front rather than on ``AutoProcessor``'s failure: that fails
    only after loading the 151k-token tokenizer, which would then be loaded twice.
    """
    # Deferred like the imports above: the auto classes must load in this order.
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    if not is_torchvision_available() and qwen_processor_name(path) is not None:
        return load_qwen_processor(path)
    return AutoProcessor.from_pretrained(str(path), backend="pil")


if __name__ == "__main__":
    frames = [Image.new("RGB", (64, 48), (40 * i, 0, 0)) for i in range(5)]
    out = QwenVideoProcessorPil(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)([frames], return_tensors="pt", fps=[1.5])
    print(out["pixel_values_videos"].shape, out["video_grid_thw"].tolist(), out["video_metadata"][0].sampled_fps)
