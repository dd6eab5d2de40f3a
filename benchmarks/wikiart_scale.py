"""The data path at WikiArt's scale: a WikiArt-shaped image set (27 styles, 81,444 images at --fraction 1) written as
class folders and as Hugging Face Parquet shards (the same encoded bytes), then each stage measured through the
project's own code and extrapolated to the whole 81,444 images.

python benchmarks/wikiart_scale.py [--fraction 0.1] [--dir /tmp/artsweep-wikiart] [--processes 2] [--seed 0]
    [--image-size 64] [--model simple_cnn] [--train-images 0] [--generate-only]

The default --fraction 0.1 (8,145 images, 2 x 3.4 GB on disk) took 10 min on the 2-core development machine beside
other work (3 min writing the set, 7 min measuring; a re-run reuses the set); --fraction 1 needs ~68 GB of disk.

The set (written once per --fraction and --seed under --dir, then reused; files already there are kept):
- styles: the 27 of WikiArt (huggan/wikiart, ArtGAN's names). Impressionism 13,060, Realism 10,733, Romanticism
  7,019, Post_Impressionism 6,450, Art_Nouveau_Modern 4,334, Pointillism 513 and Analytical_Cubism 110 as in the
  painting study; the other 20 share the remaining 39,225 in geometric decay (ratio OTHER_DECAY = 0.85, in
  OTHER_STYLES' order, largest remainder rounding). Scaled by --fraction, every class keeps >= MIN_PER_CLASS (5).
- labels per image, seeded numpy: `genre` (the Hub's 11 genres, "Unknown Genre" included; per style a Dirichlet(0.5)
  mix) and `artist` (up to the Hub's 129, "Unknown Artist" included: one per IMAGES_PER_ARTIST images, >= 28; each
  artist has one home style, every style at least one; 8 % of images "Unknown Artist", the rest Zipf within style).
- pixels: long side lognormal, median 1,300 px, sigma 0.5, clipped to [50, 5000]; width / height = exp(N(0, 0.3))
  clipped to [1/3, 3]. Content: a coarse random grid (cell 24-56 px by style) blended 45 % with the style's tint,
  upscaled, with grey brush-scale grain (sd 14 at 1/3 scale); JPEG quality 85 (~0.19 bytes per pixel, ~400 kB a
  file: ~33 GB at 81,444 images, about WikiArt's size). RGBA PNGs (long side capped at 1,024) and corrupt files, per 81,444 images and scaled by
  --fraction (>= 1 each): SPECIALS = 80 RGBA PNG, 40 truncated JPEG, 20 zero-byte, 20 text (an HTML 404 page) named
  .jpg; all in the 4 largest styles.
- layouts: folders/<Style>/<id>.jpg|png, and parquet/train-NNNNN-of-NNNNN.parquet as `datasets` writes them
  (image struct<bytes, path>, style / genre / artist int64 ClassLabels named in the b"huggingface" schema metadata,
  <= SHARD_BYTES (500 MB) per shard, row groups of 100 rows, rows shuffled across classes).

Measured per layout (folders with label None; Parquet with label "style": trainables.data.scan): scan, split
(dataset.make_splits), decode-cache build with 1 and with --processes processes (cache.open_or_build into a fresh
root each), the cache's size, the RSS and PSS of the DataLoader worker processes while they read the cache (whole
process, and the cache's mapping alone: it is memory-mapped, so shared), one epoch of --model at --image-size on the
CPU (loaders.make, 2 loader processes, the train split or --train-images of it; the epoch's start, loader processes
up and a first batch, apart) and predicting the test split through the cache with the validation transform (as
analysis.reading.evaluation.predict_split). Per layout, scan + split + cache builds run in one fresh spawned process
(the study's share) and the epoch + evaluation in another that reuses the built cache (a trial's share, its DataLoader
forking its workers as a trial's process does), so neither carries the other's memory. Every figure is then extrapolated to 81,444 images, the arithmetic printed; the last line is one JSON object. The image files were just
written or read, so they sit in the page cache (a cold disk or a bucket reads slower). Other load on the machine
lowers every rate: each stage says how many CPUs other processes kept busy meanwhile, and the load average is
recorded.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Only torch-free modules at module level: the cache's spawned pool processes and this script's own encoding pool
# import this script again (trainables.data.dataset, loaders and the model import torch: inside functions).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.decode_cache import busy_s  # noqa: E402  (torch-free: /proc/stat)

WIKIART = 81_444
STUDY_COUNTS = {  # the painting study's class counts
    "Impressionism": 13_060,
    "Realism": 10_733,
    "Romanticism": 7_019,
    "Post_Impressionism": 6_450,
    "Art_Nouveau_Modern": 4_334,
    "Pointillism": 513,
    "Analytical_Cubism": 110,
}
OTHER_STYLES = (  # the other 20 WikiArt styles, largest share first
    "Expressionism",
    "Symbolism",
    "Baroque",
    "Abstract_Expressionism",
    "Northern_Renaissance",
    "Naive_Art_Primitivism",
    "Cubism",
    "Rococo",
    "Color_Field_Painting",
    "Pop_Art",
    "Early_Renaissance",
    "High_Renaissance",
    "Minimalism",
    "Mannerism_Late_Renaissance",
    "Ukiyo_e",
    "Fauvism",
    "Contemporary_Realism",
    "New_Realism",
    "Synthetic_Cubism",
    "Action_painting",
)
OTHER_DECAY = 0.85  # each of OTHER_STYLES gets this share of the one before it
MIN_PER_CLASS = 5  # at any --fraction: every class keeps a train, a validation and a test image
GENRES = (
    "abstract_painting",
    "cityscape",
    "genre_painting",
    "illustration",
    "landscape",
    "nude_painting",
    "portrait",
    "religious_painting",
    "sketch_and_study",
    "still_life",
    "Unknown Genre",
)
ARTISTS = 129  # the Hub's artist classes at full size, "Unknown Artist" included
IMAGES_PER_ARTIST = 20  # fewer artists at small fractions: one per this many images (at least one per style)
UNKNOWN_ARTIST_SHARE = 0.08
LONG_SIDE = (1300, 0.5, 50, 5000)  # lognormal median px, sigma; clipped to [min, max]
ASPECT_SIGMA = 0.3  # log(width / height) ~ N(0, sigma), clipped to [-log 3, log 3]
TINT = 0.45  # share of the style's colour in every pixel
GRAIN = 14  # grey levels (sd) of the brush-scale grain: with quality 85, ~0.19 bytes per pixel (WikiArt: ~0.15-0.2)
JPEG_QUALITY = 85
PNG_MAX_SIDE = 1024
SPECIALS = {"rgba_png": 80, "truncated": 40, "zero_byte": 20, "text": 20}  # per 81,444 images
KINDS = ("jpeg", *SPECIALS)
SHARD_BYTES = 500_000_000
ROW_GROUP = 100  # rows per Parquet row group (datasets' default for image data)
NOT_FOUND = b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n"


def full_counts() -> dict[str, int]:
    """The 27 styles' counts at full size: the study's 7, the other 20 in geometric decay, summing to 81,444."""
    rest = WIKIART - sum(STUDY_COUNTS.values())
    share = OTHER_DECAY ** np.arange(len(OTHER_STYLES))
    exact = rest * share / share.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: rest - counts.sum()]] += 1  # largest remainders get the leftover images
    return {**STUDY_COUNTS, **dict(zip(OTHER_STYLES, counts.tolist()))}


def class_counts(fraction: float) -> dict[str, int]:
    """Per style (sorted by name, as the folder scan orders them): round(full x fraction), at least MIN_PER_CLASS."""
    return {s: max(MIN_PER_CLASS, round(n * fraction)) for s, n in sorted(full_counts().items())}


@dataclass(frozen=True)
class Plan:
    """Every image of the set: labels, pixel size, kind (index into KINDS), and the Parquet row order."""

    styles: list[str]
    artists: list[str]
    style: np.ndarray
    genre: np.ndarray
    artist: np.ndarray
    width: np.ndarray
    height: np.ndarray
    kind: np.ndarray
    order: np.ndarray  # image ids in Parquet row order (shuffled across classes)
    seed: int

    def __len__(self) -> int:
        return len(self.style)

    def name(self, i: int) -> str:
        return f"{i:06d}.{'png' if KINDS[self.kind[i]] == 'rgba_png' else 'jpg'}"

    def relpath(self, i: int) -> str:
        return f"{self.styles[self.style[i]]}/{self.name(i)}"


def _artists(rng, counts: np.ndarray, style: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Artist per image: one home style per artist (each style one first, the rest drawn by style size), 8 %
    Unknown Artist, the others Zipf (weight 1 / rank) among their style's artists."""
    n_styles = len(counts)
    n = max(n_styles + 1, min(ARTISTS, int(counts.sum()) // IMAGES_PER_ARTIST))
    home = np.concatenate([np.arange(n_styles), rng.choice(n_styles, n - 1 - n_styles, p=counts / counts.sum())])
    artist = np.zeros(len(style), np.int64)
    for s in range(n_styles):
        own = np.flatnonzero(home == s) + 1  # artist 0 is Unknown Artist
        rows = np.flatnonzero(style == s)
        weights = 1.0 / np.arange(1, len(own) + 1)
        drawn = rng.choice(own, len(rows), p=weights / weights.sum())
        artist[rows] = np.where(rng.random(len(rows)) < UNKNOWN_ARTIST_SHARE, 0, drawn)
    return ["Unknown Artist"] + [f"artist-{k:03d}" for k in range(1, n)], artist


def _sizes(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    median, sigma, lo, hi = LONG_SIDE
    long = np.clip(rng.lognormal(math.log(median), sigma, n), lo, hi)
    ratio = np.exp(np.clip(rng.normal(0.0, ASPECT_SIGMA, n), -math.log(3), math.log(3)))  # width / height
    width = np.where(ratio >= 1, long, long * ratio)
    height = np.where(ratio >= 1, long / ratio, long)
    return np.maximum(1, np.round(width)).astype(np.int64), np.maximum(1, np.round(height)).astype(np.int64)


def make_plan(fraction: float, seed: int = 0) -> Plan:
    """The whole set, drawn from one seeded generator: the same fraction and seed give the same images."""
    rng = np.random.default_rng(seed)
    by_style = class_counts(fraction)
    styles, counts = list(by_style), np.asarray(list(by_style.values()))
    style = np.repeat(np.arange(len(styles)), counts)
    n = len(style)
    mix = rng.dirichlet(np.full(len(GENRES), 0.5), len(styles))  # each style's genre mix
    genre = np.asarray([rng.choice(len(GENRES), p=mix[s]) for s in range(len(styles)) for _ in range(counts[s])])
    artists, artist = _artists(rng, counts, style)
    width, height = _sizes(rng, n)
    kind = np.zeros(n, np.int64)
    big = np.flatnonzero(np.isin(style, np.argsort(-counts)[:4]))
    picks = rng.permutation(big)
    at = 0
    for k, name in enumerate(SPECIALS, start=1):
        m = max(1, round(SPECIALS[name] * n / WIKIART))
        kind[picks[at : at + m]] = k
        at += m
    return Plan(styles, artists, style, genre.astype(np.int64), artist, width, height, kind, rng.permutation(n), seed)


def tint(style: int) -> tuple[int, int, int]:
    """The style's colour (what a model can learn from), the same in every run."""
    return tuple(int(v) for v in np.random.default_rng(10_000 + style).integers(30, 226, 3))


def painting(w: int, h: int, style: int, seed: int) -> Image.Image:
    """Cheap, JPEG-realistic content: a coarse random grid (cell 24-56 px by style) blended with the style's tint,
    upscaled to 1/3 size, grey grain added there (brush-scale texture), upscaled to full size."""
    rng = np.random.default_rng(seed)
    cell = 24 + 8 * (style % 5)
    coarse = rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3)) * (1 - TINT) + np.asarray(tint(style)) * TINT
    third = (w // 3 + 1, h // 3 + 1)
    small = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize(third, Image.Resampling.BILINEAR))
    grain = rng.normal(0.0, GRAIN, (third[1], third[0], 1))
    small = Image.fromarray((small + grain).clip(0, 255).astype(np.uint8))
    return small.resize((w, h), Image.Resampling.BILINEAR)


def encoded(kind: str, w: int, h: int, style: int, seed: int) -> bytes:
    """One file's bytes: a JPEG, an RGBA PNG, or a corrupt file."""
    if kind == "zero_byte":
        return b""
    if kind == "text":
        return NOT_FOUND
    buf = io.BytesIO()
    if kind == "rgba_png":
        scale = min(1.0, PNG_MAX_SIDE / max(w, h))
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        alpha = Image.linear_gradient("L").resize((w, h))
        Image.merge("RGBA", (*painting(w, h, style, seed).split(), alpha)).save(buf, "PNG")
        return buf.getvalue()
    painting(w, h, style, seed).save(buf, "JPEG", quality=JPEG_QUALITY)
    data = buf.getvalue()
    return data[: len(data) * 6 // 10] if kind == "truncated" else data


def write_file(task: tuple) -> int:
    """Pool task: (path, kind, w, h, style, seed) -> the file's size; an existing file is kept as it is."""
    path, kind, w, h, style, seed = task
    p = Path(path)
    if not p.exists():
        tmp = p.with_name(f".{p.name}.partial")  # hidden: a scan never sees a half-written file
        tmp.write_bytes(encoded(kind, w, h, style, seed))
        os.replace(tmp, p)
    return p.stat().st_size


def write_folders(plan: Plan, root: Path, processes: int) -> np.ndarray:
    """Every image under root/<Style>/, encoded in `processes` spawned processes; the file sizes by image id."""
    for s in plan.styles:
        (root / s).mkdir(parents=True, exist_ok=True)
    tasks = [
        (
            str(root / plan.relpath(i)),
            KINDS[plan.kind[i]],
            int(plan.width[i]),
            int(plan.height[i]),
            int(plan.style[i]),
            plan.seed * 1_000_003 + i,
        )
        for i in range(len(plan))
    ]
    sizes, t0, shown = np.zeros(len(plan), np.int64), time.monotonic(), 0
    if processes <= 1:
        done = map(write_file, tasks)
    else:
        pool = mp.get_context("spawn").Pool(processes)
        done = pool.imap(write_file, tasks, chunksize=8)
    for i, size in enumerate(done):
        sizes[i] = size
        if (i + 1) * 4 // len(plan) > shown:  # a line per 25 %
            shown = (i + 1) * 4 // len(plan)
            rate = (i + 1) / max(1e-6, time.monotonic() - t0)
            print(f"  folders: {i + 1:,}/{len(plan):,} files ({rate:,.0f}/s)", file=sys.stderr, flush=True)
    if processes > 1:
        pool.close()
        pool.join()
    return sizes


def hf_metadata(plan: Plan) -> dict[bytes, bytes]:
    def label(names):
        return {"names": list(names), "_type": "ClassLabel"}

    features = {
        "image": {"_type": "Image"},
        "style": label(plan.styles),
        "genre": label(GENRES),
        "artist": label(plan.artists),
    }
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def shard_names(total_bytes: int) -> list[str]:
    n = max(1, math.ceil(total_bytes / SHARD_BYTES))
    return [f"train-{k:05d}-of-{n:05d}.parquet" for k in range(n)]


def write_parquet(plan: Plan, folders: Path, out: Path, sizes: np.ndarray) -> list[Path]:
    """The folder files' bytes as `datasets` Parquet shards, rows in plan.order; shards already there are kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("style", pa.int64()),
            ("genre", pa.int64()),
            ("artist", pa.int64()),
        ],
        metadata=hf_metadata(plan),
    )
    out.mkdir(parents=True, exist_ok=True)
    names = shard_names(int(sizes.sum()))
    shards = []
    for name, rows in zip(names, np.array_split(plan.order, len(names))):
        path = out / name
        shards.append(path)
        if path.exists():
            continue
        tmp = out / f".{name}.partial"
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(rows), ROW_GROUP):
                ids = rows[start : start + ROW_GROUP]
                images = [{"bytes": (folders / plan.relpath(i)).read_bytes(), "path": plan.name(i)} for i in ids]
                columns = [images, plan.style[ids], plan.genre[ids], plan.artist[ids]]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=ROW_GROUP)
        os.replace(tmp, path)
    return shards


@dataclass(frozen=True)
class DataSet:
    root: Path
    folders: Path
    parquet: Path
    plan: Plan
    sizes: np.ndarray  # bytes per image id
    shards: list[Path]
    folders_s: float
    parquet_s: float


def generate(base: Path, fraction: float, seed: int = 0, processes: int = 2) -> DataSet:
    """The set under base/f<fraction>-seed<seed>/: folders/ first, then parquet/ from the same bytes."""
    root = base / f"f{fraction:g}-seed{seed}"
    plan = make_plan(fraction, seed)
    t0 = time.perf_counter()
    sizes = write_folders(plan, root / "folders", processes)
    t1 = time.perf_counter()
    shards = write_parquet(plan, root / "folders", root / "parquet", sizes)
    t2 = time.perf_counter()
    return DataSet(root, root / "folders", root / "parquet", plan, sizes, shards, t1 - t0, t2 - t1)


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Stage:
    """One measured stage: wall s, CPU s of this process and its children, CPUs other processes kept busy."""

    images: int
    wall: float  # seconds that grow with the images
    cpu: float
    other: float
    load: float  # 1-minute load average at its end
    fixed: float = 0.0  # seconds that do not (an epoch's start: loader processes up, first batch read)

    @property
    def rate(self) -> float:
        return self.images / self.wall if self.wall > 0 else float("nan")


def timed(images: int, fn, *args, **kwargs):
    """(fn's result, Stage): a stage measured while other work ran reads low, and `other` says so."""
    t0, c0, b0 = time.perf_counter(), os.times(), busy_s()
    result = fn(*args, **kwargs)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])
    return result, Stage(images, wall, cpu, max(0.0, (busy_s() - b0 - cpu) / wall), os.getloadavg()[0])


def scanned(data: Path, label: str | None, seed: int):
    """(Source, Splits, scan Stage, split Stage): trainables.data.scan, then dataset.make_splits as the study does."""
    from trainables.data import dataset, scan

    source, scan_stage = timed(0, scan.scan, str(data), label)
    scan_stage.images = len(source.paths) + len(source.skipped)
    fractions = (dataset.VAL_FRACTION, dataset.TEST_FRACTION)
    splits, split_stage = timed(len(source.paths), dataset.make_splits, source, *fractions, seed)
    return source, splits, scan_stage, split_stage


def open_cache(splits, image_size: int, root: Path, processes: int | None = None, build: bool = True):
    """cache.open_or_build under `root`: a build with `processes` processes, or (build=False) a reuse, checked."""
    from trainables.data import cache

    images, meta, built = cache.open_or_build(
        splits.paths, image_size, root=root, processes=processes, versions=splits.versions
    )
    assert built == build and (not build or meta["processes"] == processes), meta
    return images, meta


def smaps_of(pid: int, file: str) -> tuple[int, int]:
    """(RSS, PSS) in bytes of `file`'s mappings in process pid (Linux /proc/<pid>/smaps)."""
    rss = pss = 0
    inside = False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):  # a mapping's header line: address range ... path
                    inside = line.rstrip("\n").endswith(file)
                elif inside and head == "Rss:":
                    rss += int(line.split()[1]) * 1024
                elif inside and head == "Pss:":
                    pss += int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def memory_probe(file: str):
    """A function returning, per process (this one first, then the children started since: the DataLoader's
    workers), whole-process RSS and PSS and the cache file's mapping's RSS and PSS, in bytes."""
    import psutil

    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}  # e.g. multiprocessing's resource tracker

    def probe() -> list[dict]:
        out = []
        for p in [me, *(c for c in me.children(recursive=True) if c.pid not in before)]:
            try:
                full = p.memory_full_info()
            except psutil.Error:
                continue
            rss, pss = smaps_of(p.pid, file)
            out.append({"pid": p.pid, "rss": full.rss, "pss": full.pss, "cache_rss": rss, "cache_pss": pss})
        return out

    return probe


class Probed:
    """Wraps a loader: every `every` batches (and at the end, workers still alive) records probe(); the time the
    probes took is kept apart so the epoch's rate leaves it out."""

    def __init__(self, loader, probe, every: int = 20):
        self.loader, self.probe, self.every = loader, probe, every
        self.samples, self.probe_s, self.first_s = [], 0.0, 0.0

    def __len__(self):
        return len(self.loader)

    def _record(self):
        t0 = time.perf_counter()
        self.samples.append(self.probe())
        self.probe_s += time.perf_counter() - t0

    def __iter__(self):
        t0 = time.perf_counter()
        for i, batch in enumerate(self.loader):
            if i == 0:
                self.first_s = time.perf_counter() - t0
            yield batch
            if i % self.every == self.every - 1:
                self._record()
        self._record()


def model_for(name: str, classes: int, image_size: int):
    """The scratch family's network (search_spaces.nets, registered with timm), random init; its normalisation."""
    import timm
    import torch

    from search_spaces import nets  # noqa: F401  registers simple_cnn / deep_cnn with timm

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=classes, image_size=image_size, drop_rate=0.3)
    cfg = timm.data.resolve_model_data_config(model)
    return model, {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


def usable(part: np.ndarray, meta: dict) -> np.ndarray:
    """A split's indices less the cache's undecodable rows, as trials and evaluation leave them out."""
    bad = {b["index"] for b in meta["bad"]}
    return np.asarray([i for i in part if i not in bad], dtype=np.int64)


def stop_workers(device_loader) -> None:
    """Ends a DeviceLoader's persistent DataLoader processes now (they would outlive the measurement)."""
    it = getattr(device_loader.loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    device_loader.loader._iterator = None


def train_epoch(images, splits, meta: dict, a, probe) -> tuple[object, dict, Probed, Stage]:
    """One epoch of a.model over the train split (or a.train_images of it) as a trial reads it: loaders.make, 2
    loader processes, the strong recipe at strength 0.5, engine.train_one_epoch."""
    import torch

    from trainables import engine
    from trainables.data import loaders

    model, norm = model_for(a.model, len(splits.classes), a.image_size)
    device = torch.device("cpu")
    path = loaders.make(
        images,
        splits,
        usable(splits.train, meta),
        usable(splits.val, meta),
        image_size=a.image_size,
        batch_size=64,
        aug_strength=0.5,
        recipe="strong",
        sampler_power=0.5,
        norm=norm,
        seed=a.seed,
        rank=0,
        world=1,
        device=device,
        workers=a.loader_workers,
        num_samples=a.train_images,
    )
    opt = engine.make_optimizer(model, 1e-3, 1e-4)
    sched = engine.make_scheduler(opt, len(path.train), 1, 0.0)
    probed = Probed(path.train, probe)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    (result, _), stage = timed(0, engine.train_one_epoch, model, probed, opt, sched, loss, device)
    stage.images, stage.fixed = result["train_images"], probed.first_s
    stage.wall -= probed.probe_s + probed.first_s
    stop_workers(path.train)
    return model, norm, probed, stage


def evaluate(model, norm: dict, images, splits, meta: dict, image_size: int):
    """The test split through the cache with the validation transform (predict_split's DataLoader): (metrics,
    Stage)."""
    from torch.utils.data import DataLoader

    from trainables import engine, metrics
    from trainables.data import augment, loaders

    idx = usable(splits.test, meta)
    ds = loaders.CachedImages(images, idx, splits.labels[idx], augment.preprocess(image_size, **norm))
    (logits, targets), stage = timed(
        len(idx), engine.predict, model, DataLoader(ds, 64), next(model.parameters()).device
    )
    return metrics.compute(logits, targets, "test"), stage


def peak_memory(samples: list[list[dict]]) -> dict:
    """The sample with the most worker PSS: per-process figures in MB (main process first)."""
    mb = 1 / 2**20
    if not samples:
        return {}
    best = max(samples, key=lambda s: sum(p["pss"] for p in s[1:]))
    workers = best[1:]

    def total(key):
        return round(sum(p[key] for p in workers) * mb, 1)

    return {
        "samples": len(samples),
        "main": {k: round(v * mb, 1) for k, v in best[0].items() if k != "pid"},
        "workers": [{k: round(v * mb, 1) for k, v in p.items() if k != "pid"} for p in workers],
        "workers_rss_mb": total("rss"),
        "workers_pss_mb": total("pss"),
        "workers_cache_rss_mb": total("cache_rss"),
        "workers_cache_pss_mb": total("cache_pss"),
    }


def cache_stages(splits, a, work: Path, layout: str) -> tuple[dict, object, dict]:
    """Builds with 1 and with a.processes processes (byte-identical), keeps the second: (stages, images, meta)."""
    import gc

    n = len(splits.paths)
    (one, _), s1 = timed(n, open_cache, splits, a.image_size, work / f"{layout}-1p", 1)
    (images, meta), sn = timed(n, open_cache, splits, a.image_size, work / f"{layout}-{a.processes}p", a.processes)
    identical = all(  # compared in blocks through maps of their own: the training map stays untouched
        np.array_equal(x[i : i + 1024], y[i : i + 1024])
        for x, y in [(np.load(one.filename, mmap_mode="r"), np.load(images.filename, mmap_mode="r"))]
        for i in range(0, n, 1024)
    )
    del one
    gc.collect()
    shutil.rmtree(work / f"{layout}-1p")
    stages = {"cache_1p": s1, f"cache_{a.processes}p": sn}
    return stages, images, {**meta, "identical": identical}


def measure_data(layout: str, data: Path, label: str | None, a, work: Path) -> dict:
    """What the study does once: scan, split, build the decode cache (with 1, then a.processes processes; the
    second is kept for measure_training)."""
    source, splits, scan_stage, split_stage = scanned(data, label, a.seed)
    print(f"  {layout}: scanned {len(source.paths):,} images ({len(source.skipped)} skipped), split", flush=True)
    stages, images, meta = cache_stages(splits, a, work, layout)
    print(f"  {layout}: decode cache built twice ({len(meta['bad'])} undecodable)", flush=True)
    return {
        "images": len(source.paths),
        "skipped": len(source.skipped),
        "skipped_reasons": sorted({r for _, r in source.skipped}),
        "classes": len(source.classes),
        "split": [len(splits.train), len(splits.val), len(splits.test)],
        "stages": {"scan": scan_stage, "split": split_stage, **stages},
        "cache_bytes": os.path.getsize(images.filename),
        "cache_side": meta["side"],
        "cache_bad": len(meta["bad"]),
        "cache_identical": meta["identical"],
    }


def measure_training(layout: str, data: Path, label: str | None, a, work: Path) -> dict:
    """What a trial does, in a process that built nothing: the same split, the study's decode cache reused, one
    epoch (loader memory sampled), then the test split predicted."""
    _, splits, _, _ = scanned(data, label, a.seed)
    images, meta = open_cache(splits, a.image_size, work / f"{layout}-{a.processes}p", build=False)
    cache_file = str(Path(images.filename).resolve())
    model, norm, probed, epoch = train_epoch(images, splits, meta, a, memory_probe(cache_file))
    scores, ev = evaluate(model, norm, images, splits, meta, a.image_size)
    print(f"  {layout}: epoch and evaluation done", flush=True)
    return {
        "stages": {"epoch": epoch, "evaluate": ev},
        "memory": peak_memory(probed.samples),
        "test_scores": {k: round(float(v), 4) for k, v in scores.items() if k in ("test_accuracy", "test_macro_f1")},
    }


# ---------------------------------------------------------------------------------------------- reporting

TRAIN_SHARE = 1 - 0.1275 - 0.1525  # dataset.VAL_FRACTION and TEST_FRACTION (per class, rounded: ~this share)


def full_images(stage: str) -> int:
    """How many images the stage handles on the whole of WikiArt."""
    if stage == "epoch":
        return round(WIKIART * TRAIN_SHARE)
    if stage == "evaluate":
        return round(WIKIART * 0.1525)
    return WIKIART


def stage_row(layout: str, name: str, st: Stage) -> tuple[str, dict]:
    """One table line and its JSON: the measurement, then the extrapolation with its arithmetic."""
    n_full = full_images(name)
    full_s = st.fixed + n_full / st.rate
    fixed = f"{st.fixed:.1f} + " if st.fixed else ""
    line = (
        f"{layout:8s} {name:9s} {st.images:>8,} {fixed:>7s}{st.wall:>7.2f} {st.rate:>10,.1f} {st.cpu:>7.1f} "
        f"{st.other:>6.2f} {st.load:>5.2f} | {fixed}{n_full:,} / {st.rate:,.1f} = {full_s:,.0f} s ({full_s / 60:.1f} min)"
    )
    js = {
        "images": st.images,
        "s": round(st.wall, 3),
        "fixed_s": round(st.fixed, 2),
        "img_s": round(st.rate, 1),
        "cpu_s": round(st.cpu, 1),
        "other_busy_cpus": round(st.other, 2),
        "load1": round(st.load, 2),
        "full_images": n_full,
        "full_s": round(full_s, 1),
    }
    return line, js


def memory_lines(layout: str, r: dict) -> tuple[list[str], dict]:
    """The cache's size and the processes' memory while the epoch read the cache, measured and at 81,444 images."""
    n, gb = r["images"], r["cache_bytes"] / 1e9
    per10k = gb * 10_000 / n
    full_mb = WIKIART * r["cache_side"] ** 2 * 3 / 2**20
    lines = [
        f"{layout}: decode cache {gb:.3f} GB for {n:,} images ({r['cache_side']} px: {per10k:.3f} GB per 10k) -> "
        f"81,444 x {r['cache_side']}^2 x 3 B = {full_mb * 2**20 / 1e9:.2f} GB",
    ]
    js = {
        "cache_gb": round(gb, 3),
        "cache_gb_per_10k": round(per10k, 3),
        "full_cache_gb": round(full_mb * 2**20 / 1e9, 2),
    }
    m = r["memory"]
    if not m:
        return lines, js
    main, workers = m["main"], m["workers"]
    each = ", ".join(
        f"RSS {w['rss']:,.0f} / PSS {w['pss']:,.0f} (cache {w['cache_rss']:,.0f} / {w['cache_pss']:,.0f})"
        for w in workers
    )
    lines.append(
        f"{layout}: memory at the loaders' peak ({m['samples']} samples), MB: {len(workers)} loader processes {each}; "
        f"training process RSS {main['rss']:,.0f} / PSS {main['pss']:,.0f} (cache {main['cache_rss']:,.0f} / "
        f"{main['cache_pss']:,.0f}); RSS counts each shared page in every process, PSS splits it among them"
    )
    read, full_read = r["stages"]["epoch"].images, full_images("epoch")
    scale = full_read / read
    full_cache_rss = [min(full_mb, w["cache_rss"] * scale) for w in workers]
    full_rss = [w["rss"] - w["cache_rss"] + c for w, c in zip(workers, full_cache_rss)]
    pss_now = sum(w["cache_pss"] for w in workers) + main["cache_pss"]
    full_pss = min(full_mb, pss_now * scale)
    lines.append(
        f"{layout}: at 81,444 images an epoch reads {full_read:,} rows, {scale:.1f} x the {read:,} read here: each "
        f"loader's cache RSS min({full_mb:,.0f}, cache RSS x {scale:.1f}) = "
        + ", ".join(f"{c:,.0f}" for c in full_cache_rss)
        + " MB, its RSS "
        + ", ".join(
            f"{w['rss']:,.0f} - {w['cache_rss']:,.0f} + {c:,.0f} = {t:,.0f}"
            for w, c, t in zip(workers, full_cache_rss, full_rss)
        )
        + f" MB; the cache's PSS over all processes min({full_mb:,.0f}, {pss_now:,.1f} x {scale:.1f}) = {full_pss:,.0f} MB "
        "(page cache, shared: one copy however many loaders)"
    )
    js |= {
        "measured_mb": m,
        "epoch_rows_read": read,
        "full_epoch_rows": full_read,
        "full_workers_cache_rss_mb": [round(c) for c in full_cache_rss],
        "full_workers_rss_mb": [round(t) for t in full_rss],
        "full_cache_pss_mb": round(full_pss),
    }
    return lines, js


HEADER = (
    f"{'layout':8s} {'stage':9s} {'images':>8s} {'seconds':>14s} {'images/s':>10s} {'CPU s':>7s} {'other':>6s} "
    f"{'load':>5s} | at 81,444 images: [start +] the stage's images / images/s"
)


def report(ds: DataSet, gen: dict, results: dict, a, load0: tuple) -> None:
    """The table, the memory and extrapolation lines, then the JSON summary line (the last line printed)."""
    print()
    print(HEADER)
    out = {}
    for layout, r in results.items():
        rows = {}
        for name, st in r["stages"].items():
            line, rows[name] = stage_row(layout, name, st)
            print(line)
        out[layout] = {k: v for k, v in r.items() if k not in ("stages", "memory")} | {"stages": rows}
    print()
    for layout, r in results.items():
        lines, out[layout]["memory"] = memory_lines(layout, r)
        print("\n".join(lines))
        why = f": {'; '.join(r['skipped_reasons'])}" if r["skipped"] else ""
        print(
            f"{layout}: the scan kept {r['images']:,} of {r['images'] + r['skipped']:,} ({r['skipped']} skipped{why}); "
            f"split {'/'.join(f'{x:,}' for x in r['split'])}; the cache build found {r['cache_bad']} undecodable (left "
            f"out of training and evaluation); 1 vs {a.processes} processes byte-identical: {r['cache_identical']}; "
            f"test split after one epoch: {r['test_scores']}"
        )
    print(
        json.dumps(
            {
                "benchmark": "wikiart_scale",
                "fraction": a.fraction,
                "seed": a.seed,
                "image_size": a.image_size,
                "model": a.model,
                "train_images_cap": a.train_images,
                "cpus": len(os.sched_getaffinity(0)),
                "load_avg_start": [round(x, 2) for x in load0],
                "load_avg_end": [round(x, 2) for x in os.getloadavg()],
                "generation": gen,
                "layouts": out,
            }
        )
    )


def generation_summary(ds: DataSet, st: Stage) -> dict:
    plan, sizes = ds.plan, ds.sizes
    long = np.maximum(plan.width, plan.height)
    kinds = {k: int((plan.kind == i).sum()) for i, k in enumerate(KINDS)}
    parquet = sum(p.stat().st_size for p in ds.shards)
    gen = {
        "images": len(plan),
        "styles": len(plan.styles),
        "genres": len(GENRES),
        "artists": len(plan.artists),
        "smallest_class": int(np.bincount(plan.style).min()),
        "kinds": kinds,
        "long_side_px": {"median": int(np.median(long)), "min": int(long.min()), "max": int(long.max())},
        "folders_gb": round(int(sizes.sum()) / 1e9, 3),
        "mean_file_kb": round(float(sizes.mean()) / 1e3, 1),
        "parquet_gb": round(parquet / 1e9, 3),
        "shards": len(ds.shards),
        "folders_s": round(ds.folders_s, 1),
        "parquet_s": round(ds.parquet_s, 1),
        "s": round(st.wall, 1),
        "other_busy_cpus": round(st.other, 2),
        "full_gb": round(int(sizes.sum()) / 1e9 * WIKIART / len(plan), 1),
    }
    print(
        f"set {ds.root}: {len(plan):,} images ({kinds}), {len(plan.styles)} styles (smallest {gen['smallest_class']}), "
        f"{len(GENRES)} genres, {len(plan.artists)} artists; long side median {gen['long_side_px']['median']} px "
        f"({gen['long_side_px']['min']}-{gen['long_side_px']['max']}); folders {gen['folders_gb']} GB "
        f"(mean {gen['mean_file_kb']} kB; 81,444 images: {gen['full_gb']} GB), Parquet {gen['parquet_gb']} GB in "
        f"{len(ds.shards)} shard(s); written or reused in {ds.folders_s:.1f} s + {ds.parquet_s:.1f} s "
        f"(other processes kept {st.other:.1f} CPUs busy)"
    )
    return gen


PHASES = {"data": measure_data, "training": measure_training}


def isolated(phase: str, layout: str, data: Path, label: str | None, a, work: Path) -> dict:
    """PHASES[phase] in a spawned process of its own: each starts from a fresh interpreter (no torch, model, loader
    processes or pyarrow memory pool left over from another phase), as the study's and a trial's processes do."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, phase, layout, str(data), label, a, str(work)))
    proc.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:
        result = {"error": f"the measuring process ended (exit code {proc.exitcode}) without a result"}
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{layout} {phase}: {result['error']}")
    result["stages"] = {k: Stage(**v) for k, v in result["stages"].items()}
    return result


def _child(conn, phase: str, layout: str, data: str, label: str | None, a, work: str) -> None:
    import dataclasses
    import traceback

    import torch

    # a spawned process defaults to spawning its own children; a trial's process (a Ray worker, started by Ray, not
    # by multiprocessing) forks its DataLoader processes, Linux's default: so do these
    mp.set_start_method("fork", force=True)
    torch.set_num_threads(a.threads)
    try:
        result = PHASES[phase](layout, Path(data), label, a, Path(work))
        result["stages"] = {k: dataclasses.asdict(v) for k, v in result["stages"].items()}
        conn.send(result)
    except BaseException:
        conn.send({"error": traceback.format_exc()})
        raise
    finally:
        conn.close()


def measure(layout: str, data: Path, label: str | None, a, work: Path) -> dict:
    """One layout: the study's share, then a trial's, each in a process of its own; the cache removed after."""
    try:
        built = isolated("data", layout, data, label, a, work)
        trained = isolated("training", layout, data, label, a, work)
    finally:
        shutil.rmtree(work / f"{layout}-{a.processes}p", ignore_errors=True)
    return {**built, **trained, "stages": {**built["stages"], **trained["stages"]}}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fraction", type=float, default=0.1, help="share of WikiArt's 81,444 images (default 0.1)")
    p.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "artsweep-wikiart"), help="where the set lives")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, default=2, help="encoding and parallel cache-build processes")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--model", default="simple_cnn", choices=["simple_cnn", "deep_cnn"], help="scratch family net")
    p.add_argument("--train-images", type=int, default=0, help="images of the epoch (default 0: the train split)")
    p.add_argument("--loader-workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    p.add_argument("--generate-only", action="store_true", help="write the set, measure nothing")
    a = p.parse_args(argv)
    if not 0 < a.fraction <= 1:
        p.error("--fraction must be in (0, 1]")
    return a


def main() -> None:
    a = parse()
    load0 = os.getloadavg()
    ds, st = timed(0, generate, Path(a.dir), a.fraction, a.seed, a.processes)
    gen = generation_summary(ds, st)
    if a.generate_only:
        print(json.dumps({"benchmark": "wikiart_scale", "fraction": a.fraction, "generation": gen}))
        return
    work = Path(tempfile.mkdtemp(prefix="artsweep-wikiart-cache-"))
    results = {}
    try:
        results["folders"] = measure("folders", ds.folders, None, a, work)
        results["parquet"] = measure("parquet", ds.parquet, "style", a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(ds, gen, results, a, load0)


if __name__ == "__main__":
    main()
