"""Open the images a chat refers to: ``data:`` URIs, local files, or PIL images.

One policy, applied by ``load_image`` (which only ``masking.ChatCodec`` calls):

* local paths resolve against the dataset's folder (the working directory without one),
  with symlinks and ``..`` resolved first, and are refused if they end up outside it,
  unless ``--allow-outside-paths``;
* ``http(s)`` URLs are refused unless ``--allow-remote-images``; then they are fetched
  with a timeout and a size cap, and a failed fetch is a clear error;
* a ``data:`` URI's declared type must be an image type and match the decoded image;
* a pixel limit guards against decompression bombs.
"""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000
MAX_REMOTE_BYTES = 50_000_000
REMOTE_TIMEOUT_S = 30


class ImageError(ValueError):
    """An image cannot be opened; the message says which and why."""


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from.

    Attributes:
        base_dir: Folder relative paths are resolved against (the dataset's folder; the
            working directory when None). Paths may not leave it.
        allow_outside_paths: Allow paths that leave ``base_dir`` (``--allow-outside-paths``).
        allow_remote: Allow ``http(s)`` URLs (``--allow-remote-images``).
        max_pixels: Refuse larger images (decompression bombs).
        max_bytes: Refuse larger remote downloads.
    """

    base_dir: Path | None = None
    allow_outside_paths: bool = False
    allow_remote: bool = False
    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_REMOTE_BYTES


def data_uri(data: bytes, mime: str) -> str:
    """Inline image bytes as a ``data:<mime>;base64,`` URI (the form ``load_image`` reads)."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _open(data: bytes | Path, where: str, max_pixels: int, mime: str | None = None) -> Image.Image:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                if mime is not None and Image.MIME.get(img.format or "") != mime:
                    raise ImageError(f"{where}: the data URI says {mime} but holds a {img.format} image")
                if img.width * img.height > max_pixels:
                    raise ImageError(f"{where}: image of {img.width}x{img.height} pixels exceeds the limit of {max_pixels}")
                return img.convert("RGB")
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{where}: unreadable image (not an image format Pillow reads)") from None
    except (OSError, Image.DecompressionBombError, Image.DecompressionBombWarning, ValueError) as exc:
        raise ImageError(f"{where}: unreadable image ({exc})") from None


def _fetch(url: str, where: str, policy: ImagePolicy) -> bytes:
    """Download a remote image with a timeout and a size cap."""
    try:
        with urllib.request.urlopen(url, timeout=REMOTE_TIMEOUT_S) as resp:  # noqa: S310 - allowed by --allow-remote-images
            data = resp.read(policy.max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"{where}: cannot fetch {url[:80]}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(f"{where}: cannot fetch {url[:80]}: {reason}") from None
    if len(data) > policy.max_bytes:
        raise ImageError(f"{where}: remote image {url[:80]} is larger than {policy.max_bytes} bytes")
    return data


def load_image(ref: Any, *, where: str = "image", policy: ImagePolicy | None = None) -> Image.Image:
    """Open one image reference.

    Args:
        ref: A PIL image, a ``data:image/...;base64,`` URI, a file path, or (if allowed) an
            ``http(s)`` URL.
        where: How errors name the example (e.g. ``data.jsonl line 12``).
        policy: Where images may come from; by default relative paths resolve against the
            working directory, nothing outside it is opened, and remote URLs are refused.

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
        mime = header[5:].split(";", 1)[0].lower()
        if not mime.startswith("image/"):
            raise ImageError(f"{where}: a data URI of type {mime or 'text/plain'} is not an image")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"{where}: bad base64 image data ({exc})") from None
        return _open(data, where, policy.max_pixels, "image/jpeg" if mime == "image/jpg" else mime)
    if ref.startswith(("http://", "https://")):
        if not policy.allow_remote:
            raise ImageError(f"{where}: remote image {ref[:80]} refused; pass --allow-remote-images to fetch it")
        return _open(_fetch(ref, where, policy), where, policy.max_pixels)
    path = Path(ref[7:] if ref.startswith("file://") else ref).expanduser()
    base = (policy.base_dir or Path.cwd()).resolve()
    full = (base / path).resolve()  # symlinks and ".." resolved before the check
    if not policy.allow_outside_paths and not full.is_relative_to(base):
        raise ImageError(f"{where}: image path {ref} leaves the dataset folder {base}; pass --allow-outside-paths")
    if not full.is_file():
        raise ImageError(f"{where}: image file {full} not found")
    return _open(full, where, policy.max_pixels)
