"""benchmarks/wikiart_scale.py's generator, in process and tiny: WikiArt's class counts, the set written as class
folders and as Hugging Face Parquet shards holding the same bytes, its corrupt files and RGBA PNGs, and a re-run
that keeps what is there. The measurement itself is the benchmark's run (`python benchmarks/wikiart_scale.py`)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
TINY = 0.0005  # of 81,444 images: ~140, most classes at their minimum of 5


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("wikiart_scale", ROOT / "benchmarks" / "wikiart_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    module.LONG_SIDE = (96, 0.5, 50, 200)  # small pictures: the same code, a fraction of the encoding time
    return module


@pytest.fixture(scope="module")
def written(bench, tmp_path_factory):
    base = tmp_path_factory.mktemp("wikiart")
    return bench.generate(base, TINY, seed=0, processes=1)


def test_class_counts_are_wikiarts_and_every_class_keeps_a_few(bench):
    full = bench.full_counts()
    assert len(full) == 27 and sum(full.values()) == bench.WIKIART == 81_444
    assert {k: full[k] for k in bench.STUDY_COUNTS} == bench.STUDY_COUNTS
    others = [full[s] for s in bench.OTHER_STYLES]
    assert others == sorted(others, reverse=True) and abs(others[1] / others[0] - bench.OTHER_DECAY) < 0.01
    tiny = bench.class_counts(TINY)
    assert list(tiny) == sorted(full) and min(tiny.values()) == bench.MIN_PER_CLASS
    assert tiny["Impressionism"] == round(13_060 * TINY)


def test_the_plan_is_reproducible_and_labels_every_image(bench):
    a, b = bench.make_plan(TINY, seed=3), bench.make_plan(TINY, seed=3)
    for field in ("style", "genre", "artist", "width", "height", "kind", "order"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.width, bench.make_plan(TINY, seed=4).width)
    assert a.genre.max() < len(bench.GENRES) and a.artist.max() < len(a.artists)
    assert len(a.artists) == 28 and a.artists[0] == "Unknown Artist"  # at ~140 images: one per style, and Unknown
    assert set(np.unique(a.style).tolist()) == set(range(27))
    assert sorted(a.order.tolist()) == list(range(len(a)))


def test_folders_hold_every_image_with_its_corrupt_files_and_rgba_pngs(bench, written):
    plan, folders = written.plan, written.folders
    assert sorted(p.name for p in folders.iterdir()) == plan.styles
    files = {p.relative_to(folders).as_posix(): p for p in folders.rglob("*") if p.is_file()}
    assert sorted(files) == sorted(plan.relpath(i) for i in range(len(plan)))
    by_kind = {k: [files[plan.relpath(i)] for i in np.flatnonzero(plan.kind == n)] for n, k in enumerate(bench.KINDS)}
    assert {k: len(v) for k, v in by_kind.items() if k != "jpeg"} == {k: 1 for k in bench.SPECIALS}
    assert all(p.stat().st_size == 0 for p in by_kind["zero_byte"])
    assert all(p.read_bytes().startswith(b"<html") and p.suffix == ".jpg" for p in by_kind["text"])
    assert all(not p.read_bytes().rstrip(b"\0").endswith(b"\xff\xd9") for p in by_kind["truncated"])
    assert all(Image.open(p).mode == "RGBA" and p.suffix == ".png" for p in by_kind["rgba_png"])
    for p in by_kind["jpeg"][:5]:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and max(im.size) >= 50


def test_parquet_shards_are_the_datasets_layout_with_the_same_bytes(bench, written):
    plan = written.plan
    assert [p.name for p in written.shards] == ["train-00000-of-00001.parquet"]
    pf = pq.ParquetFile(written.shards[0])
    schema = pf.schema_arrow
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert all(schema.field(c).type == pa.int64() for c in ("style", "genre", "artist"))
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert features["style"] == {"names": plan.styles, "_type": "ClassLabel"}
    assert features["genre"]["names"] == list(bench.GENRES) and features["artist"]["names"] == plan.artists
    groups = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    assert max(groups) == bench.ROW_GROUP and sum(groups) == len(plan)
    table = pf.read()
    images = table.column("image").to_pylist()
    ids = [int(Path(cell["path"]).stem) for cell in images]
    assert ids == plan.order.tolist() and ids != sorted(ids)  # shuffled across classes
    assert table.column("style").to_pylist() == plan.style[ids].tolist()
    for cell, i in zip(images, ids):
        assert cell["bytes"] == (written.folders / plan.relpath(i)).read_bytes()
    rgb = next(c["bytes"] for c, i in zip(images, ids) if bench.KINDS[plan.kind[i]] == "jpeg")
    assert Image.open(io.BytesIO(rgb)).format == "JPEG"


def test_a_rerun_keeps_the_files_already_written(bench, written):
    stamps = {p: p.stat().st_mtime_ns for p in [*written.folders.rglob("*.*"), *written.shards]}
    again = bench.generate(written.root.parent, TINY, seed=0, processes=1)
    assert again.root == written.root
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert np.array_equal(again.sizes, written.sizes)
