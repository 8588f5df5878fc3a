"""Open the images a chat refers to: ``data:`` URIs, local files, or PIL images.

Guards: a pixel limit against decompression bombs; local paths resolved against the
dataset's folder and refused if they leave it (unless allowed); ``http(s)`` URLs refused
unless allowed.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image cannot be opened; the message says which and why."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from.

    Attributes:
        base_dir: Folder relative paths are resolved against (the dataset's folder).
        allow_outside_paths: Allow paths that leave ``base_dir`` (``--allow-outside-paths``).
        allow_remote: Allow ``http(s)`` URLs (``--allow-remote-images``).
        max_pixels: Refuse larger images (decompression bombs).
    """

    base_dir: Path | None = None
    allow_outside_paths: bool = False
    allow_remote: bool = False
    max_pixels: int = MAX_PIXELS


def data_uri(data: bytes, mime: str) -> str:
    """Inline image bytes as a ``data:<mime>;base64,`` URI (the form ``load_image`` reads)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _open(data: bytes | Path, where: str, max_pixels: int) -> Image.Image:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if img.width * img.height > max_pixels:
                    raise ImageError(f"{where}: image of {img.width}x{img.height} pixels exceeds the limit of {max_pixels}")
                return img.convert("RGB")
    except ImageError:
        raise
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, ValueError) as exc:
        raise ImageError(f"{where}: unreadable image ({exc})") from None


def load_image(ref: Any, *, where: str = "image", policy: ImagePolicy | None = None) -> Image.Image:
    """Open one image reference.

    Args:
        ref: A PIL image, a ``data:image/...;base64,`` URI, a file path, or (if allowed) an
            ``http(s)`` URL.
        where: How errors name the example (e.g. ``data.jsonl line 12``).
        policy: Where images may come from; by default relative paths resolve against the
            working directory and remote URLs are refused.

    Returns:
        An RGB image.
    """
    policy = policy or ImagePolicy()
    if isinstance(ref, Image.Image):
        return ref if ref.mode == "RGB" else ref.convert("RGB")
    if not isinstance(ref, str) or not ref:
        raise ImageError(f"{where}: image reference must be a data URI, a path or a URL, not {type(ref).__name__}")
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if ";base64" not in header:
            raise ImageError(f"{where}: only base64 data URIs are supported")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"{where}: bad base64 image data ({exc})") from None
        return _open(data, where, policy.max_pixels)
    if ref.startswith(("http://", "https://")):
        if not policy.allow_remote:
            raise ImageError(f"{where}: remote image {ref[:80]} refused; pass --allow-remote-images to fetch it")
        import urllib.request

        with urllib.request.urlopen(ref, timeout=30) as resp:  # noqa: S310 - explicitly allowed by the user
            return _open(resp.read(), where, policy.max_pixels)
    path = Path(ref[7:] if ref.startswith("file://") else ref).expanduser()
    base = (policy.base_dir or Path.cwd()).resolve()
    full = (base / path).resolve()
    if not policy.allow_outside_paths and policy.base_dir is not None and not full.is_relative_to(base):
        raise ImageError(f"{where}: image path {ref} leaves the dataset folder {base}; pass --allow-outside-paths")
    if not full.is_file():
        raise ImageError(f"{where}: image file {full} not found")
    return _open(full, where, policy.max_pixels)
