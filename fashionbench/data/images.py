"""Decoding one image file safely: inside the data root, any colour mode, or a reason why not.

Real image folders hold files that are missing, empty, truncated, not images at all, or
huge; and images in grayscale, CMYK, with alpha or 16 bits per channel. ``decode_image``
turns every usable one into uint8 RGB of the requested size and every other one into an
``UnusableImage`` whose ``reason`` is a short metric-friendly word.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from struct import error as struct_error

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow's own default limit (Image.MAX_IMAGE_PIXELS): ~89.5 megapixels, a 1024x1024x24-bit
# image compressed into a few kB can otherwise claim gigabytes when decoded.
DEFAULT_MAX_PIXELS = 89_478_485

# The reasons decode_image and resolve_inside give, as counted in ``skipped_<reason>``.
UNUSABLE_REASONS = (
    "path_escapes_root",
    "missing_file",
    "empty_file",
    "not_an_image",
    "truncated",
    "decompression_bomb",
    "undecodable",
)

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class UnusableImage(Exception):
    """An image file the catalogue cannot use; ``reason`` is one of UNUSABLE_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, or UnusableImage("path_escapes_root") if it would leave ``root``.

    The check is on the normalised path, not the resolved one: a data set may legitimately
    symlink its image folder elsewhere, but an annotation line must not name ``../`` or an
    absolute path.
    """
    if not relative or os.path.isabs(relative) or Path(relative).is_absolute():
        raise UnusableImage("path_escapes_root", f"{relative!r} is absolute or empty")
    root_text = os.path.normpath(str(root))
    joined = os.path.normpath(os.path.join(root_text, relative))
    if os.path.commonpath([root_text, joined]) != root_text or joined == root_text:
        raise UnusableImage("path_escapes_root", f"{relative!r} leaves {root_text}")
    return Path(joined)


def decode_image(path: Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """The image at ``path`` as uint8 RGB (size x size x 3) and its original colour mode.

    The picture is rotated as its EXIF orientation says and resized to a square without
    cropping, as Keras' ``image_dataset_from_directory`` does by default; transparent
    pixels are laid on white (shop photos are on white). Raises UnusableImage.
    """
    try:
        byte_count = path.stat().st_size
    except FileNotFoundError:
        raise UnusableImage("missing_file", f"{path} does not exist") from None
    except OSError as error:
        raise UnusableImage("missing_file", f"{path}: {error}") from None
    if byte_count == 0:
        raise UnusableImage("empty_file", f"{path} has 0 bytes")
    return _decode(path, str(path), size, max_pixels)


def decode_image_bytes(data: bytes, size: int, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
                       ) -> tuple[np.ndarray, str]:
    """``decode_image`` for an encoded image's bytes (a JPEG, PNG... sent to the served model);
    ``name`` says which one in errors. Raises UnusableImage."""
    if not data:
        raise UnusableImage("empty_file", f"{name} has 0 bytes")
    return _decode(io.BytesIO(data), name, size, max_pixels)


def _decode(source: Path | io.BytesIO, path: str, size: int, max_pixels: int) -> tuple[np.ndarray, str]:
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UnusableImage(
                    "decompression_bomb",
                    f"{path} is {width}x{height} = {width * height} pixels, over the limit {max_pixels}",
                )
            mode = image.mode
            # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that still covers `size`; the
            # real ~400 px photos then decode several times faster.
            image.draft("RGB", (size, size))
            image.load()
            rgb = _to_rgb(_upright(image))
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(rgb, dtype=np.uint8), mode
    except UnusableImage:
        raise
    except Image.DecompressionBombError as error:
        raise UnusableImage("decompression_bomb", f"{path}: {error}") from None
    except UnidentifiedImageError:
        raise UnusableImage("not_an_image", f"{path} is not an image Pillow can identify") from None
    except OSError as error:
        reason = "truncated" if "truncated" in str(error) or "broken data stream" in str(error) else "undecodable"
        raise UnusableImage(reason, f"{path}: {error}") from None
    except (ValueError, SyntaxError, EOFError) as error:
        raise UnusableImage("undecodable", f"{path}: {type(error).__name__}: {error}") from None


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as it is if the EXIF block is corrupt
    (the pixels are fine, only the camera's metadata is not)."""
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct_error):
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode Pillow decodes, 16-bit values scaled (not clipped) to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 (an almost white picture); scale
        # 0..65535 onto 0..255 instead.
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.max() <= 1.0:
            values = values * 255.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")
