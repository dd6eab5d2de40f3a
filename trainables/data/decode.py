"""Decoding images as real collections need: format by content, RGB out, EXIF orientation, bad files named.

decode_rgb(path) / decode_bytes(data) -> uint8 [3, H, W]; raise BadImage with a reason. torchvision.io decodes JPEG, PNG,
WebP and GIF (faster than Pillow for JPEG/PNG); Pillow takes the rest (BMP, TIFF, very large images).
decode_fit(path, side, policy) -> uint8 [side, side, 3] is the decode cache's per-image step, Pillow only: a JPEG
much larger than `side` is decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT scaling (draft mode), then
fit_image resizes and crops or pads; decode_into runs it over references (files, objects, Parquet rows:
trainables.data.storage) in the cache's pool. This module imports no torch at module level (only inside the tensor
functions), so the cache's spawned pool processes start in ~0.3 s instead of ~2-3 s.
check(path) is the cheap scan-time test: header (by content, not extension) plus a truncation check.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import ExifTags, Image, ImageOps

from trainables.data import storage

if TYPE_CHECKING:
    import torch

# Above this many pixels, decode through Pillow's reducing JPEG draft mode instead of at full size:
# WikiArt's largest files are ~25 MP; a 200 MP scan would need 600 MB per decode.
MAX_FULL_DECODE_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = None  # we bound decode size ourselves (above), so Pillow's bomb guard is not needed
FORMATS = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"}
# Area averaging: antialiased, and Pillow's cheapest filter: ~r taps per axis for a reduction by r (bilinear ~2r,
# bicubic ~4r); after a JPEG draft r < 2. decode_fit on the benchmark's JPEGs: ~410 images/s with BOX, ~365 with
# BILINEAR, ~290 with BICUBIC; mean distance to a full decode + Lanczos on a photo (matplotlib's grace_hopper.jpg
# at 64-255 px): 3.6, 3.2 and 1.9 grey levels. reducing_gap=3 (fit_image): over 3x, whole pixel blocks are
# averaged first (Image.reduce), as version 1 did.
RESAMPLE = Image.Resampling.BOX
# EXIF orientation -> (axes swapped, picture at the right, at the bottom) after exif_transpose: where a JPEG
# draft's picture, which starts at the stored image's top-left corner, ends up (see _draft)
_ANCHOR = {
    2: (False, True, False),
    3: (False, True, True),
    4: (False, False, True),
    5: (True, False, False),
    6: (True, True, False),
    7: (True, True, True),
    8: (True, False, True),
}


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


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I"):  # 16-bit greyscale: keep the top 8 bits
        im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).astype(np.uint8))
    return im if im.mode == "RGB" else im.convert("RGB")  # palette+alpha, CMYK, LA, L -> RGB


def _pillow(data: bytes, max_side: int | None) -> torch.Tensor:
    import torch

    with Image.open(io.BytesIO(data)) as im:
        if max_side and im.width * im.height > MAX_FULL_DECODE_PIXELS:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale directly
            im.thumbnail((max_side * 4, max_side * 4))  # others: bounded resize after decoding
        arr = np.array(_to_rgb(ImageOps.exif_transpose(im)))  # a writable copy for torch
    return torch.from_numpy(arr).permute(2, 0, 1)


def fit_image(im: Image.Image, side: int, policy: str, region: tuple[float, ...] | None = None) -> np.ndarray:
    """RGB image -> uint8 [side, side, 3], aspect preserved. crop: shorter side to `side`, centre square;
    letterbox: longer side to `side`, centred on black. region: the picture's (left, top, right, bottom) in im's
    pixels (a JPEG draft's size is rounded up to whole pixels); default: all of im."""
    return np.asarray(_fitted(im, side, policy, region))


def _fitted(im: Image.Image, side: int, policy: str, region: tuple[float, ...] | None = None) -> Image.Image:
    x0, y0, x1, y1 = region or (0, 0, *im.size)
    w, h = x1 - x0, y1 - y0
    scale = side / (min(w, h) if policy == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if policy == "crop":  # resample only the centre square of the (nw, nh) resize: the same pixels, less work
        left, top = (nw - side) // 2, (nh - side) // 2
        box = (x0 + left * w / nw, y0 + top * h / nh, x0 + (left + side) * w / nw, y0 + (top + side) * h / nh)
        return im.resize((side, side), RESAMPLE, box=box, reducing_gap=3.0)
    out = Image.new("RGB", (side, side))  # black
    resized = im.resize((nw, nh), RESAMPLE, box=(x0, y0, x1, y1), reducing_gap=3.0)
    out.paste(resized, ((side - nw) // 2, (side - nh) // 2))
    return out


def _draft(im: Image.Image, side: int, policy: str) -> tuple[float, float] | None:
    """Asks libjpeg for the strongest reduction, 1/2, 1/4 or 1/8, that still leaves fit_image one to do (the
    shorter side for crop, the longer for letterbox stays >= side); the picture's (width, height) from the
    top-left corner of the reduced image, or None (not a JPEG, or under 2x larger: decoded at full size)."""
    w, h = im.size
    ref = min(w, h) if policy == "crop" else max(w, h)
    if ref < 2 * side or im.format not in ("JPEG", "MPO"):
        return None
    # Pillow takes the largest scale s in 8, 4, 2, 1 with s <= w // asked_w and s <= h // asked_h
    asked = (side, side) if policy == "crop" else (side if w >= h else 1, side if h > w else 1)
    drafted = im.draft("RGB", asked)
    return drafted[1][2:] if drafted else None


def _region(size: tuple[int, int], extent: tuple[float, float], orientation: int) -> tuple[float, ...]:
    """A draft's picture box in the image after exif_transpose (of `size`)."""
    swap, right, bottom = _ANCHOR.get(orientation, (False, False, False))
    ew, eh = extent[::-1] if swap else extent
    x0, y0 = size[0] - ew if right else 0, size[1] - eh if bottom else 0
    return x0, y0, x0 + ew, y0 + eh


def decode_fit(path: str | Path, side: int, policy: str) -> np.ndarray:
    """An image file -> uint8 [side, side, 3] as the decode cache holds it; BadImage with the reason otherwise.
    Draft-mode pixels differ from a full decode's by a few grey levels (libjpeg's scaled IDCT)."""
    return np.asarray(_decode_fitted(Path(path).read_bytes(), side, policy))


def _decode_fitted(data: bytes, side: int, policy: str) -> Image.Image:
    """An encoded image's bytes -> the cache's PIL image (decode_fit without the file)."""
    if not data:
        raise BadImage("zero-byte file")
    try:
        im = Image.open(io.BytesIO(data))
    except Exception as e:  # Pillow raises UnidentifiedImageError, SyntaxError, struct.error, ...
        raise BadImage(f"not an image ({type(e).__name__})") from None
    try:
        with im:
            extent = _draft(im, side, policy)
            orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
            ImageOps.exif_transpose(im, in_place=True)
            region = _region(im.size, extent, orientation) if extent else None
            return _fitted(_to_rgb(im), side, policy, region)
    except Exception as e:
        raise BadImage(_undecodable(e)) from None


def decode_into(task: tuple) -> tuple[int, list[tuple[int, str]]]:
    """The decode cache's pool task (here, not in cache.py, so a pool process imports no torch).
    task = (npy file, header bytes, first index, refs, side, policy): reads the refs (files, objects or Parquet
    rows: trainables.data.storage) and writes each one's decode_fit into rows first.. of the uint8
    [N, side, side, 3] array in that new file. -> (images done, [(index, reason)] of the bad ones, whose rows it
    leaves as they are: zeros, black)."""
    npy, offset, first, refs, side, policy = task
    bad, row = [], side * side * 3
    fd = os.open(npy, os.O_WRONLY)
    try:  # each image straight from Pillow's bytes to the file: no array copy, no page faults of a buffer
        for j, encoded, why in storage.read(refs):
            try:
                if encoded is None:
                    raise BadImage(why)
                data = memoryview(_decode_fitted(encoded, side, policy).tobytes())
            except BadImage as e:
                bad.append((first + j, str(e)))
                continue
            done, start = 0, offset + (first + j) * row
            while done < row:
                done += os.pwrite(fd, data[done:], start + done)
    finally:
        os.close(fd)
    return len(refs), bad


def _undecodable(e: Exception) -> str:
    return f"undecodable ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"


def decode_rgb(path: str | Path, max_side: int | None = 1024) -> torch.Tensor:
    """uint8 RGB [3, H, W]. `max_side` bounds only decompression-bomb-sized inputs (see above)."""
    return decode_bytes(Path(path).read_bytes(), max_side)


def decode_bytes(data: bytes, max_side: int | None = 1024, max_pixels: int | None = None) -> torch.Tensor:
    """decode_rgb for a file's bytes (an upload to the served model); BadImage with the reason otherwise.
    max_pixels: refuse larger images from their header, before any decoding (the served model's bomb guard)."""
    import torch
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
            img = decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.RGB,
                apply_exif_orientation=True,
            )
            if img.dtype == torch.uint16:  # 16-bit PNG: keep the top 8 bits
                img = (img.to(torch.int32) >> 8).to(torch.uint8)
            return img
        return _pillow(data, max_side)
    except Exception as e:
        raise BadImage(_undecodable(e)) from None
