"""Images/s of building the decode cache: version 1's full decode vs reduced-scale JPEG decoding, in one process
and in several, and the seconds to publish a built cache to a storage folder and download it on another node.

python benchmarks/decode_cache.py [--images 2000] [--image-size 224] [--processes 2] [--dir /tmp/artsweep-bench]

Generates a set of JPEGs of mixed sizes (median ~800 px on the long side) once, then measures one pass of each:
full_decode_1p: version 1's build loop (torchvision full-size decode + Pillow bicubic resize, one process);
draft_1p / draft_<N>p: cache.open_or_build with 1 / N processes (must be byte-identical); publish and download
through a local storage folder; reading the built cache back. Ends with an extrapolation to WikiArt (81k images)
and, as the last line, one JSON object. Other load on the machine lowers every figure: run it on an idle one
(each variant's line says how many CPUs other processes kept busy while it ran).
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Only torch-free modules at module level: the cache's spawned pool processes import this script again.
from trainables.data import decode

WIKIART = 81_000


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


def v1_fit(img, side: int, policy: str) -> np.ndarray:
    """cache.fit as of cache VERSION 1: the whole image resized (bicubic), then the centre crop or padding."""
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    w, h = pil.size
    scale = side / (min(w, h) if policy == "crop" else max(w, h))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    pil = pil.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    if policy == "crop":
        left, top = (nw - side) // 2, (nh - side) // 2
        return np.asarray(pil.crop((left, top, left + side, top + side)))
    out = np.zeros((side, side, 3), np.uint8)
    top, left = (side - nh) // 2, (side - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(pil)
    return out


def busy_s() -> float:
    """CPU seconds every process on this machine has used since boot (Linux /proc/stat), or NaN."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return float("nan")
    return (sum(map(int, fields)) - int(fields[3]) - int(fields[4])) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def timed(fn, *args):
    """(fn's result, wall s, CPU s of this process and its children, CPUs other processes kept busy meanwhile):
    a variant measured while other work ran reads low, and the last figure says so."""
    t0, c0, b0 = time.perf_counter(), os.times(), busy_s()
    result = fn(*args)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])
    return result, wall, cpu, max(0.0, (busy_s() - b0 - cpu) / wall)


def v1_build(paths: list[str], side: int, out: Path) -> np.ndarray:
    """Version 1's build loop into a memmap."""
    mm = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=(len(paths), side, side, 3))
    for i, p in enumerate(paths):
        mm[i] = v1_fit(decode.decode_rgb(p, max_side=side * 2), side, "crop")
    mm.flush()
    return mm


def build(paths: list[str], size: int, root: Path, processes: int) -> tuple[np.ndarray, dict]:
    """cache.open_or_build into a new root, checked to have built with `processes` processes."""
    from trainables.data import cache

    images, meta, built = cache.open_or_build(paths, size, root=root, processes=processes)
    assert built and meta["source"] == "built" and meta["processes"] == processes, meta
    return images, meta


def storage_round_trip(paths: list[str], size: int, folder: Path, work: Path, reference: np.ndarray) -> dict:
    """Publishes a built cache folder to a local storage folder, then opens the same files on a 'second node'
    (another cache root): seconds and MiB/s each way."""
    from trainables.data import cache

    store, mib = work / "storage", (folder / "images.npy").stat().st_size / 2**20
    t0 = time.perf_counter()
    cache._publish(str(store), folder)  # what open_or_build does after a build when given storage
    publish_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    images, meta, built = cache.open_or_build(paths, size, root=work / "node2", storage=str(store))
    download_s = time.perf_counter() - t0
    assert not built and meta["source"] == "downloaded" and np.array_equal(images, reference)
    return {
        "MiB": round(mib, 1),
        "publish_s": round(publish_s, 2),
        "publish_MiB_s": round(mib / publish_s),
        "download_s": round(download_s, 2),
        "download_MiB_s": round(mib / download_s),
    }


def read_rate(images: np.ndarray) -> float:
    """Images/s copying each cached image out of the mmap, as CachedImages does per sample."""
    t0 = time.perf_counter()
    for i in range(len(images)):
        np.array(images[i])
    return len(images) / (time.perf_counter() - t0)


def extrapolate(img_s: dict, key: str, trip: dict, n: int) -> dict:
    """WikiArt-sized figures: build with this machine's processes vs download at the measured local rate, and
    the storage bandwidth above which downloading beats building."""
    build_s = WIKIART / img_s[key]
    mib = trip["MiB"] * WIKIART / n
    return {
        "images": WIKIART,
        "GiB": round(mib / 1024, 1),
        f"build_s_{key}": round(build_s),
        "download_s_local": round(mib / trip["download_MiB_s"]),
        "download_beats_build_above_MiB_s": round(mib / build_s),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--processes", type=int, default=2, help="processes of the parallel build (default: 2)")
    p.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "artsweep-bench"))
    a = p.parse_args()
    import torch

    from trainables.data import cache

    torch.set_num_threads(1)
    paths = make_set(Path(a.dir), a.images)
    sides = sorted(max(Image.open(x).size) for x in paths)
    side, n, par = cache.cached_side(a.image_size), len(paths), f"draft_{a.processes}p"
    print(
        f"{n} JPEGs, long side median {sides[n // 2]} px (min {sides[0]}, max {sides[-1]}); cached side {side} px; "
        f"{len(os.sched_getaffinity(0))} CPUs"
    )
    work = Path(tempfile.mkdtemp(prefix="artsweep-cache-bench-"))
    v1_fit(decode.decode_rgb(paths[0]), side, "crop")  # imports (torchvision: ~2 s) before any timing
    decode.decode_fit(paths[0], side, "crop")
    try:
        runs = {
            "full_decode_1p": timed(v1_build, paths, side, work / "v1.npy"),
            "draft_1p": timed(build, paths, a.image_size, work / "one", 1),
            par: timed(build, paths, a.image_size, work / "many", a.processes),
        }
        for name, (_, wall, cpu, other) in runs.items():
            print(
                f"{name:15s} {n / wall:7.1f} images/s ({n / cpu:.1f} per CPU second; other processes kept "
                f"{other:.1f} CPUs busy meanwhile)"
            )
        figs = {name: run[1:] for name, run in runs.items()}  # (wall s, CPU s, other processes' CPUs)
        v1, (one, _), (many, meta_n) = (runs[k][0] for k in runs)
        identical = bool(np.array_equal(one, many))
        diff = float(np.abs(one.astype(np.int16) - np.asarray(v1, dtype=np.int16)).mean())
        del v1, one, runs
        (work / "v1.npy").unlink()
        shutil.rmtree(work / "one")
        print(
            f"{a.processes} processes byte-identical to 1: {identical}; mean |pixel - version 1 pixel|: {diff:.2f} "
            "grey levels"
        )
        trip = storage_round_trip(paths, a.image_size, work / "many" / meta_n["key"], work, many)
        print(
            f"storage folder: publish {trip['MiB']:,.0f} MiB in {trip['publish_s']:.2f} s "
            f"({trip['publish_MiB_s']:,} MiB/s), download in {trip['download_s']:.2f} s "
            f"({trip['download_MiB_s']:,} MiB/s)"
        )
        read = read_rate(many)
        print(f"decode cache read only: {read:,.0f} images/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(n, side, a.processes, figs, read, identical, diff, trip)


def report(
    n: int, side: int, processes: int, figs: dict, read: float, identical: bool, diff: float, trip: dict
) -> None:
    """The WikiArt extrapolation line, then the JSON summary line (the last line printed)."""
    par = f"draft_{processes}p"
    img_s = {**{k: n / wall for k, (wall, _, _) in figs.items()}, "cache_read": read}
    ex = extrapolate(img_s, par, trip, n)
    print(
        f"WikiArt ({WIKIART:,} images, {ex['GiB']} GiB cached): build {ex[f'build_s_{par}'] / 60:.1f} min with "
        f"{processes} processes here ({WIKIART / img_s['full_decode_1p'] / 60:.0f} min with version 1) vs download "
        f"{ex['download_s_local'] / 60:.1f} min at this folder's {trip['download_MiB_s']:,} MiB/s; downloading "
        f"wins above {ex['download_beats_build_above_MiB_s']} MiB/s of storage bandwidth"
    )
    print(
        json.dumps(
            {
                "images": n,
                "side": side,
                "processes": processes,
                "img_s": {k: round(v, 1) for k, v in img_s.items()},
                "cpu_img_s": {k: round(n / cpu, 1) for k, (_, cpu, _) in figs.items()},
                "other_busy_cpus": {k: round(other, 2) for k, (_, _, other) in figs.items()},
                "ratios": {
                    "draft_1p/full_decode_1p": round(img_s["draft_1p"] / img_s["full_decode_1p"], 2),
                    f"{par}/draft_1p": round(img_s[par] / img_s["draft_1p"], 2),
                },
                "identical": identical,
                "mean_abs_diff_vs_v1": round(diff, 2),
                "storage": trip,
                "wikiart": ex,
            }
        )
    )


if __name__ == "__main__":
    main()
