"""Images/s: decode+resize from files with Pillow (a plain torchvision ImageFolder pipeline) vs reading
the decode cache with the same augmentation.

python benchmarks/decode_cache.py [--images 2000] [--image-size 224] [--dir /tmp/artsweep-bench]

Generates a set of JPEGs of mixed sizes (median ~800 px on the long side) once, then times one pass
of each pipeline in this process (no DataLoader workers), and the one-off cache build.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import datasets
from torchvision.transforms import v2 as transforms

from trainables import cache, data


def make_set(root: Path, n: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        cls = root / f"class_{i % 8}"
        cls.mkdir(parents=True, exist_ok=True)
        p = cls / f"{i:05d}.jpg"
        if not p.exists():
            long_side = int(np.clip(rng.lognormal(np.log(800), 0.5), 120, 3000))
            short = int(long_side * rng.uniform(0.6, 1.0))
            w, h = (long_side, short) if rng.random() < 0.5 else (short, long_side)
            small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)  # smooth-ish content
            Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(p, quality=90)
        paths.append(str(p))
    return paths


def rate(dataset, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--recipe", default="conservative", choices=data.RECIPES)
    p.add_argument("--aug-strength", type=float, default=0.5)
    p.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "artsweep-bench"))
    a = p.parse_args()
    torch.set_num_threads(1)
    paths = make_set(Path(a.dir), a.images)
    sides = sorted(max(Image.open(x).size) for x in paths)
    print(f"{len(paths)} JPEGs, long side median {sides[len(sides) // 2]} px (min {sides[0]}, max {sides[-1]})")
    s = a.image_size
    augment = data.build_transform(s, True, a.aug_strength, a.recipe)     # the same per-sample augmentation
    folder = datasets.ImageFolder(a.dir, transform=transforms.Compose([   # the plain baseline: decode with Pillow
        transforms.Resize(cache.cached_side(s)), transforms.PILToTensor(), augment]))
    pil = rate(folder, len(folder))
    print(f"Pillow ImageFolder decode+resize+augment: {pil:8.1f} images/s")
    plain = datasets.ImageFolder(a.dir, transform=transforms.Compose([transforms.Resize(cache.cached_side(s)),
                                                                       transforms.PILToTensor()]))
    pil_decode = rate(plain, len(plain))
    print(f"Pillow ImageFolder decode+resize only:    {pil_decode:8.1f} images/s")
    t0 = time.perf_counter()
    images, meta, built = cache.open_or_build([x for x, _ in folder.imgs], s, root=Path(a.dir + "-cache"))
    print(f"cache {'build' if built else 'reuse'}: {time.perf_counter() - t0:8.1f} s (one-off per node, "
          f"{images.nbytes / 2**20:.0f} MiB on disk)")
    cached = cache.CachedImages(images, np.arange(len(images)), np.zeros(len(images), int), augment)
    fast = rate(cached, len(cached))
    print(f"decode cache read+augment:                {fast:8.1f} images/s")
    read = rate(cache.CachedImages(images, np.arange(len(images)), np.zeros(len(images), int), lambda x: x), len(images))
    print(f"decode cache read only:                   {read:8.1f} images/s")
    print(f"speed-up with augmentation: {fast / pil:.1f}x; decode alone: {read / pil_decode:.0f}x")


if __name__ == "__main__":
    main()
