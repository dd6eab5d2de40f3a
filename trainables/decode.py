"""Decoding images as real collections need: format by content, RGB out, EXIF orientation, bad files named.

decode_rgb(path) / decode_bytes(data) -> uint8 [3, H, W]; raise BadImage with a reason. torchvision.io decodes JPEG, PNG,
WebP and GIF (faster than Pillow for JPEG/PNG); Pillow takes the rest (BMP, TIFF, very large images).
check(path) is the cheap scan-time test: header (by content, not extension) plus a truncation check.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

# Above this many pixels, decode through Pillow's reducing JPEG draft mode instead of at full size:
# WikiArt's largest files are ~25 MP; a 200 MP scan would need 600 MB per decode.
MAX_FULL_DECODE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None  # we bound decode size ourselves (above), so Pillow's bomb guard is not needed
FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}


class BadImage(ValueError):
    """A file that cannot be used as an image; str() is the reason."""


def _truncated(fmt: str, data: bytes) -> bool:
    tail = data.rstrip(b"\0")[-32:]
    if fmt in ("JPEG", "MPO"):
        return b"\xff\xd9" not in tail
    if fmt == "PNG":
        return b"IEND" not in tail
    return False


def check(path: str | Path) -> tuple[str, int, int]:
    """(format, width, height) after reading only the header and the tail; BadImage otherwise."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise BadImage("zero-byte file")
    try:
        with Image.open(path) as im:
            fmt, (w, h) = im.format, im.size
    except Exception as e:  # Pillow raises UnidentifiedImageError, SyntaxError, struct.error, ...
        raise BadImage(f"not an image ({type(e).__name__})") from None
    if fmt not in FORMATS:
        raise BadImage(f"unsupported format {fmt}")
    with open(path, "rb") as f:
        f.seek(max(0, size - 4096))
        if _truncated(fmt, f.read()):
            raise BadImage(f"truncated {fmt}")
    return fmt, w, h


def _pillow(data: bytes, max_side: int | None) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        if max_side and im.width * im.height > MAX_FULL_DECODE_PIXELS:
            im.draft("RGB", (max_side, max_side))       # JPEG: decode at a reduced scale directly
            im.thumbnail((max_side * 4, max_side * 4))  # others: bounded resize after decoding
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I"):           # 16-bit greyscale: keep the top 8 bits
            im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8))
        arr = np.asarray(im.convert("RGB"))             # palette+alpha, CMYK, LA, L -> RGB
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def decode_rgb(path: str | Path, max_side: int | None = 1024) -> torch.Tensor:
    """uint8 RGB [3, H, W]. `max_side` bounds only decompression-bomb-sized inputs (see above)."""
    return decode_bytes(Path(path).read_bytes(), max_side)


def decode_bytes(data: bytes, max_side: int | None = 1024, max_pixels: int | None = None) -> torch.Tensor:
    """decode_rgb for a file's bytes (an upload to the served model); BadImage with the reason otherwise.
    max_pixels: refuse larger images from their header, before any decoding (the served model's bomb guard)."""
    from torchvision.io import ImageReadMode, decode_image
    if not data:
        raise BadImage("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            pixels = im.width * im.height
            big = pixels > MAX_FULL_DECODE_PIXELS
            fast = im.format in ("JPEG", "PNG", "WEBP", "GIF") and not big
    except Exception as e:
        raise BadImage(f"not an image ({type(e).__name__})") from None
    if max_pixels and pixels > max_pixels:
        raise BadImage(f"{im.width}x{im.height} px ({pixels / 1e6:.0f} MP) is over the {max_pixels / 1e6:.0f} MP limit")
    try:
        if fast:
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                               apply_exif_orientation=True)
            if img.dtype == torch.uint16:  # 16-bit PNG: keep the top 8 bits
                img = (img.to(torch.int32) >> 8).to(torch.uint8)
            return img
        return _pillow(data, max_side)
    except Exception as e:
        raise BadImage(f"undecodable ({type(e).__name__}: {str(e).splitlines()[0][:80]})") from None
