"""The one image loader (training, eval, benchmarks) and the processor's size limits.

``load_image(path | bytes | PIL.Image | {"bytes", "path"})`` -> an RGB ``PIL.Image``, decoded in
full (a truncated file fails here, not inside the processor), with

- the EXIF orientation applied (a phone photo stands the way it was shot);
- transparency composited onto WHITE, as Qwen's own preprocessing does (transformers'
  ``convert_to_rgb``, qwen-vl-utils); ``Image.convert("RGB")`` would drop it onto black;
- palette (``P``, with or without a transparent index), ``LA``, ``I;16`` / ``I`` (16-bit grey,
  scaled to 8 bits rather than clipped), ``1``, ``L``, ``CMYK`` and ``YCbCr`` converted.

``image_size`` reads only the header (cheap: used on every record at training start) and
``size_problem`` says why the Qwen2-VL processor would refuse or distort an image of that size.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

__all__ = ["ImageDecodeError", "describe", "image_size", "load_image", "size_problem"]

MAX_ASPECT_RATIO = 200  # the Qwen2-VL processor (smart_resize) refuses more
PATCH_FACTOR = 28  # 14-px patches merged 2x2
MIN_SIDE = PATCH_FACTOR // 2  # below it smart_resize rounds the side to zero patches
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageDecodeError(ValueError):
    """An image that cannot be opened or decoded (message names the source)."""


def describe(src: Any) -> str:
    """A short name for an image source, for error messages."""
    if hasattr(src, "image_source"):
        return str(src)
    if isinstance(src, dict):
        path = src.get("path")
        return repr(path) if path and src.get("bytes") is None else f"<{_nbytes(src)} bytes>"
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    if isinstance(src, (str, os.PathLike)):
        return repr(os.fspath(src))
    return f"<{type(src).__name__}>"


def _nbytes(src: dict) -> int:
    data = src.get("bytes")
    return len(data) if data is not None else 0


def _open(src: Any):
    """A lazily opened PIL image for any accepted source (the caller closes it)."""
    from PIL import Image

    if hasattr(src, "image_source"):  # a lazy reference (e.g. a row of an Arrow table)
        src = src.image_source()
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, dict):
        data, path = src.get("bytes"), src.get("path")
        if data is None and not path:
            raise ImageDecodeError("image entry has neither 'bytes' nor 'path'")
        src = data if data is not None else path
    if isinstance(src, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(src)))
    if isinstance(src, (str, os.PathLike)):
        return Image.open(os.fspath(src))
    raise ImageDecodeError(
        f"expected an image path, bytes, a PIL image or {{'bytes', 'path'}}, got {type(src).__name__}"
    )


def image_size(src: Any) -> tuple[int, int]:
    """(width, height) as the image will be seen (EXIF rotation applied), from the header only.
    Raises ImageDecodeError naming the source when the header cannot be read."""
    try:
        img = _open(src)
        try:
            width, height = img.size
            orientation = _orientation(img)
        finally:
            if img is not src:
                img.close()
    except ImageDecodeError:
        raise
    except FileNotFoundError as err:
        raise ImageDecodeError(f"image file {describe(src)} not found") from err
    except Exception as err:  # PIL raises many types for unreadable headers
        raise ImageDecodeError(f"cannot read image {describe(src)} ({err})") from err
    return (height, width) if orientation in _TRANSPOSING else (width, height)


def _orientation(img) -> int:
    """The EXIF orientation from the header. A PNG's getexif() decodes the whole image (an eXIf
    chunk may follow the pixel data), so for PNG only a chunk before the pixels is read."""
    from PIL import Image

    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(0x0112, 1)
    return img.getexif().get(0x0112, 1)


def resized_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) the Qwen2-VL processor resizes an image to: sides multiples of 28, the
    area brought within [min_pixels, max_pixels] keeping the aspect ratio (its smart_resize)."""
    f = PATCH_FACTOR
    h_bar, w_bar = round(height / f) * f, round(width / f) * f
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(f, math.floor(height / beta / f) * f)
        w_bar = max(f, math.floor(width / beta / f) * f)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return w_bar, h_bar


def size_problem(width: int, height: int, *, min_pixels: int = 3136,
                 max_pixels: int = 400_000) -> str | None:
    """Why an image of this size cannot go to the processor as it is, or None when it can:
    an aspect ratio over 200 (the processor raises), a side under 14 px, or a resized area
    over max_pixels (a very thin image whose short side is held at one 28-px patch)."""
    if width < 1 or height < 1:
        return f"image is empty ({width}x{height})"
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return (f"image {width}x{height} has aspect ratio {ratio:.0f} > {MAX_ASPECT_RATIO} "
                "(the Qwen2-VL processor refuses it)")
    if min(width, height) < MIN_SIDE:
        return f"image {width}x{height} has a side under {MIN_SIDE} px"
    w, h = resized_size(width, height, min_pixels, max_pixels)
    if w * h > max_pixels:
        return (f"image {width}x{height} resizes to {w}x{h} = {w * h} pixels, over max_pixels "
                f"{max_pixels}")
    return None


def load_image(src: Any):
    """``src`` (a path, encoded bytes, a PIL image or a datasets ``{"bytes", "path"}`` entry)
    -> an RGB PIL image, decoded in full, upright (EXIF), transparency on white.
    Raises ImageDecodeError (a ValueError) naming the source when it cannot be decoded."""
    from PIL import ImageOps

    try:
        img = _open(src)
        opened = img is not src
        try:
            img.load()  # decode now: a truncated file fails here
            upright = ImageOps.exif_transpose(img)
            return to_rgb(upright if upright is not None else img)
        finally:
            if opened:
                img.close()
    except ImageDecodeError:
        raise
    except FileNotFoundError as err:
        raise ImageDecodeError(f"image file {describe(src)} not found") from err
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad data
        raise ImageDecodeError(f"cannot decode image {describe(src)} ({err})") from err


def to_rgb(img):
    """A decoded PIL image of any mode -> a new RGB image (alpha onto white, 16-bit scaled)."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _to_8bit_grey(img)
        mode = "L"
    if mode == "P" and "transparency" in img.info or mode in ("PA", "LA", "La", "RGBa", "RGBA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _to_8bit_grey(img):
    """16-bit / 32-bit integer or float grey -> 8-bit L: 16-bit values are scaled (x / 257),
    not clipped at 255 as ``convert("L")`` does."""
    import numpy as np
    from PIL import Image

    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    else:
        top = 65535.0 if img.mode.startswith("I;16") or (values.size and values.max() > 255) else 255.0
    grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey)
