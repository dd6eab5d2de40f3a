"""The built-in "painting styles" dataset: generated, reproducible, written as real image files.

python -m trainables.data.builtin_dataset [DIR]   # writes it (default: default_dir(), in $ARTSWEEP_CACHE)

8 classes of synthetic "styles" with distinct textures and compositions, 10:1 imbalance (like WikiArt's
Impressionism vs Analytical_Cubism), mixed sizes (48-112 px), JPEG and PNG files. Every image also
borrows a faint layer from another style, plus palette jitter and noise, so a small CNN in a few epochs
lands well below 100 % macro F1 and the rare classes need sampler weighting.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trainables.paths import cache_root

VERSION = 1
# class -> number of images; largest / smallest = 10
CLASS_COUNTS = {
    "impressionism": 300,
    "realism": 200,
    "pointillism": 140,
    "cubism": 100,
    "color_field": 70,
    "pop_art": 50,
    "ukiyo_e": 40,
    "minimalism": 30,
}


def default_dir() -> Path:
    """Where the dataset is written unless told: this machine's artsweep cache (trainables.paths.cache_root)."""
    return cache_root() / f"painting-styles-v{VERSION}"


def _palette(rng: np.random.Generator, base: tuple, spread: int = 60, n: int = 5) -> list:
    base = np.array(base)
    return [tuple(int(v) for v in np.clip(base + rng.integers(-spread, spread + 1, 3), 0, 255)) for _ in range(n)]


def _rand_xy(rng, w, h):
    return int(rng.integers(0, w)), int(rng.integers(0, h))


def _impressionism(d, rng, w, h):  # many short pastel strokes, one dominant direction
    pal, ang = _palette(rng, (170, 180, 200), 70), rng.uniform(0, np.pi)
    for _ in range(w * h // 25):
        x, y = _rand_xy(rng, w, h)
        a, ln = ang + rng.normal(0, 0.4), rng.uniform(3, 8)
        d.line([(x, y), (x + ln * np.cos(a), y + ln * np.sin(a))], fill=pal[rng.integers(len(pal))], width=2)


def _realism(d, rng, w, h):  # horizon, sky gradient, a few solid objects
    sky, ground = _palette(rng, (120, 160, 200), 40, 1)[0], _palette(rng, (90, 110, 60), 40, 1)[0]
    hy = int(h * rng.uniform(0.4, 0.7))
    for y in range(h):
        t = y / h
        d.line([(0, y), (w, y)], fill=tuple(int(c * (1 - 0.4 * t)) for c in (sky if y < hy else ground)))
    for _ in range(rng.integers(2, 5)):
        x, y = _rand_xy(rng, w, h)
        r = rng.integers(4, max(5, w // 5))
        d.ellipse([x - r, y - r, x + r, y + r], fill=_palette(rng, (100, 80, 60), 50, 1)[0])


def _pointillism(d, rng, w, h):  # dense small dots of pure colours on a light ground
    d.rectangle([0, 0, w, h], fill=(235, 230, 215))
    pal = _palette(rng, (128, 128, 128), 127, 6)
    for _ in range(w * h // 12):
        x, y = _rand_xy(rng, w, h)
        d.ellipse([x - 1, y - 1, x + 1, y + 1], fill=pal[rng.integers(len(pal))])


def _cubism(d, rng, w, h):  # overlapping angular facets in muted ochre/grey
    pal = _palette(rng, (140, 120, 90), 50, 6)
    for _ in range(rng.integers(12, 25)):
        pts = [_rand_xy(rng, w, h) for _ in range(rng.integers(3, 5))]
        d.polygon(pts, fill=pal[rng.integers(len(pal))], outline=(40, 35, 30))


def _color_field(d, rng, w, h):  # two or three soft horizontal bands
    pal = _palette(rng, (150, 80, 80), 100, 3)
    cuts = sorted(rng.integers(h // 5, 4 * h // 5, rng.integers(1, 3)).tolist())
    edges = [0] + cuts + [h]
    for i in range(len(edges) - 1):
        d.rectangle([0, edges[i], w, edges[i + 1]], fill=pal[i])


def _pop_art(d, rng, w, h):  # halftone grid of bright dots with thick black outlines
    bg, dot = _palette(rng, (240, 220, 40), 40, 1)[0], _palette(rng, (220, 30, 60), 40, 1)[0]
    d.rectangle([0, 0, w, h], fill=bg)
    step = int(rng.integers(5, 8))
    for y in range(0, h, step):
        for x in range(0, w, step):
            d.ellipse([x, y, x + step // 2, y + step // 2], fill=dot)
    for _ in range(2):
        x, y = _rand_xy(rng, w, h)
        d.rectangle([x, y, x + w // 3, y + h // 3], outline=(0, 0, 0), width=3)


def _ukiyo_e(d, rng, w, h):  # beige ground, flat colour areas and dark wave outlines
    d.rectangle([0, 0, w, h], fill=(225, 210, 170))
    blue = _palette(rng, (40, 70, 120), 30, 1)[0]
    base, amp, freq = rng.uniform(0.5, 0.8) * h, rng.uniform(3, 8), rng.uniform(0.1, 0.3)
    pts = [(x, base + amp * np.sin(freq * x)) for x in range(0, w + 1, 2)]
    d.polygon(pts + [(w, h), (0, h)], fill=blue)
    for k in range(3):
        d.line([(x, y - 4 * k) for x, y in pts], fill=(20, 20, 30), width=1)


def _minimalism(d, rng, w, h):  # plain ground, one or two large flat rectangles
    d.rectangle([0, 0, w, h], fill=_palette(rng, (230, 230, 230), 25, 1)[0])
    for c in _palette(rng, (60, 60, 160), 90, int(rng.integers(1, 3))):
        x, y = _rand_xy(rng, w // 2, h // 2)
        d.rectangle([x, y, x + rng.integers(w // 4, w // 2), y + rng.integers(h // 4, h // 2)], fill=c)


STYLES = {
    "impressionism": _impressionism,
    "realism": _realism,
    "pointillism": _pointillism,
    "cubism": _cubism,
    "color_field": _color_field,
    "pop_art": _pop_art,
    "ukiyo_e": _ukiyo_e,
    "minimalism": _minimalism,
}


def render(style: str, rng: np.random.Generator) -> Image.Image:
    """One image of `style`, with a faint layer of a random other style and noise to blur the classes."""
    w, h = int(rng.integers(48, 113)), int(rng.integers(48, 113))
    img = Image.new("RGB", (w, h), _palette(rng, (128, 128, 128), 100, 1)[0])
    STYLES[style](ImageDraw.Draw(img), rng, w, h)
    other = Image.new("RGB", (w, h), (128, 128, 128))
    STYLES[list(STYLES)[rng.integers(len(STYLES))]](ImageDraw.Draw(other), rng, w, h)
    img = Image.blend(img, other, float(rng.uniform(0.15, 0.45)))
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(4, 16), (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def ensure_builtin_dataset(root: Path | None = None, seed: int = 0) -> Path:
    """Write the dataset under `root` (default default_dir()) once, atomically, and return it; later calls reuse
    the files."""
    root = Path(root) if root else default_dir()
    if (root / ".complete").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root.parent))
    rng = np.random.default_rng(seed)
    for style, n in CLASS_COUNTS.items():
        (tmp / style).mkdir()
        for i in range(n):
            img = render(style, rng)
            if i % 3 == 0:
                img.save(tmp / style / f"{style}_{i:04d}.png")
            else:
                img.save(tmp / style / f"{style}_{i:04d}.jpg", quality=90)
    (tmp / ".complete").write_text(f"v{VERSION} seed {seed}\n")
    try:
        tmp.rename(root)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return root


if __name__ == "__main__":
    print(ensure_builtin_dataset(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
