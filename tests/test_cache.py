"""The decode cache: built once per (files, size, policy), shared by concurrent trials, rebuilt on change; the same
bytes from any number of build processes; published to the study's storage and downloaded, not rebuilt, by
another node."""

import multiprocessing as mp
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import cache, dataset, decode, loaders
from trainables.data.scan import scan

SIZE = 32  # cached side 36 px: a JPEG with the relevant side >= 72 px is decoded at a reduced scale


def _open(args):
    paths, root = args
    return cache.open_or_build(paths, SIZE, "crop", root=root)[2]


def mixed_folder(root, n_jpeg=36):
    """Real files: JPEGs of 90-400 px (most take the reduced-scale path), one with EXIF rotation, a 16-bit PNG,
    a non-image and a truncated JPEG. -> (paths, indices of the two bad files)."""
    rng = np.random.default_rng(1)
    root.mkdir()
    paths = []
    for i in range(n_jpeg):
        w, h = int(rng.integers(90, 400)), int(rng.integers(90, 400))
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)  # features ~6 px in the 36 px cache
        exif = Image.Exif()
        exif[0x0112] = 6 if i == 3 else 1  # 6: stored turned, shown rotated 90 degrees clockwise
        paths.append(str(root / f"{i:03d}.jpg"))
        Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR).save(
            paths[-1], quality=90, exif=exif.tobytes()
        )
    Image.fromarray(rng.integers(0, 65535, (150, 220), dtype=np.uint16)).save(root / "deep.png")
    (root / "notes.jpg").write_bytes(b"not an image at all")
    whole = Path(paths[0]).read_bytes()
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # header intact, scan data cut
    paths += [str(root / "deep.png"), str(root / "notes.jpg"), str(root / "cut.jpg")]
    return paths, [n_jpeg + 1, n_jpeg + 2]


@pytest.mark.integration  # 2 spawned processes, as 2 trials on a node
def test_concurrent_trials_build_once_and_read_the_same_pixels(tiny_folder, tmp_path):
    paths = scan(tiny_folder).paths
    with mp.get_context("spawn").Pool(2) as pool:
        built = pool.map(_open, [(paths, tmp_path)] * 2)
    assert sorted(built) == [False, True]  # one trial built it, the other waited and reused
    images, meta, again = cache.open_or_build(paths, SIZE, "crop", root=tmp_path)
    assert not again and images.shape == (len(paths), cache.cached_side(SIZE), cache.cached_side(SIZE), 3)
    assert meta["bad"] == [] and meta["source"] == "built" and images.dtype == np.uint8 and images[0].any()


@pytest.mark.unit
def test_changes_rebuild_and_policies_differ(tmp_path):
    (tmp_path / "a").mkdir()
    img = Image.fromarray(np.full((20, 60, 3), 200, np.uint8))  # wide: crop and letterbox differ
    img.save(tmp_path / "a" / "x.png")
    paths = [str(tmp_path / "a" / "x.png")]
    root = tmp_path / "cache"
    crop, _, _ = cache.open_or_build(paths, 16, "crop", root=root)
    box, _, built = cache.open_or_build(paths, 16, "letterbox", root=root)
    assert built and crop[0].min() == 200 and box[0].min() == 0  # letterbox pads with black
    Image.fromarray(np.full((20, 60, 3), 50, np.uint8)).save(paths[0])
    changed, _, built = cache.open_or_build(paths, 16, "crop", root=root)
    assert built and changed[0].max() == 50


@pytest.mark.unit
def test_cached_dataset_applies_augmentation_per_sample(tiny_folder, tmp_path):
    splits = dataset.make_splits(scan(tiny_folder), 0.2, 0.2, seed=0)
    images, _, _ = cache.open_or_build(splits.paths, SIZE, root=tmp_path)

    def noise(img):  # any per-sample random transform
        return img.float() + torch.rand(img.shape) / 2  # < 0.5: float32 rounds 254 + 0.99999 up to 255

    ds = loaders.CachedImages(images, splits.train, splits.labels[splits.train], noise)
    a, b = ds[0][0], ds[0][0]
    assert a.shape == (3, 36, 36) and a.dtype == torch.float32 and not torch.equal(a, b)
    assert torch.equal(a.floor(), torch.from_numpy(np.array(images[splits.train[0]])).permute(2, 0, 1).float())
    assert ds[3][1] == splits.labels[splits.train][3]


@pytest.mark.integration  # a pool of 2 spawned processes
def test_parallel_build_is_byte_identical_to_serial(tmp_path, capsys):
    paths, bad = mixed_folder(tmp_path / "images")
    serial, meta1, built1 = cache.open_or_build(paths, SIZE, root=tmp_path / "one", processes=1)
    lines = capsys.readouterr().err.splitlines()
    parallel, meta2, built2 = cache.open_or_build(paths, SIZE, root=tmp_path / "two", processes=2)
    assert built1 and built2 and meta1["processes"] == 1 and meta2["processes"] == 2
    assert np.array_equal(serial, parallel) and meta1["bad"] == meta2["bad"]
    assert [b["index"] for b in meta2["bad"]] == bad and all(b["path"] == paths[b["index"]] for b in meta2["bad"])
    assert "not an image" in meta2["bad"][0]["reason"] and "undecodable" in meta2["bad"][1]["reason"]
    assert not parallel[bad].any() and all(parallel[i].any() for i in range(len(paths)) if i not in bad)
    assert re.fullmatch(r"artsweep: decode cache 100% \(39/39, [\d,]+ images/s, ETA 0 s\)", lines[-1]), lines
    boxed, _, _ = cache.open_or_build(paths, SIZE, "letterbox", root=tmp_path / "one", processes=1)
    side = cache.cached_side(SIZE)
    for i in (0, 3, len(paths) - 3):  # reduced-scale (one EXIF-rotated) and PNG rows: close to a full decode
        for policy, rows in (("crop", parallel), ("letterbox", boxed)):
            full = cache.fit(decode.decode_rgb(paths[i], max_side=None), side, policy)
            assert np.abs(rows[i].astype(int) - full).mean() < 3, (i, policy)


@pytest.mark.unit
def test_a_second_node_downloads_the_published_cache_without_decoding(tmp_path, capsys):
    paths, bad = mixed_folder(tmp_path / "images", n_jpeg=12)
    storage = tmp_path / "ray_results"
    first, meta1, built1 = cache.open_or_build(paths, SIZE, root=tmp_path / "node1", storage=str(storage))
    published = storage / "decoded" / meta1["key"]
    assert built1 and sorted(os.listdir(published)) == ["images.npy", "meta.json"]
    for p in paths:  # garble every source but keep size and mtime (the key): decoding now fails on every file
        st = os.stat(p)
        open(p, "wb").write(bytes(st.st_size))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    second, meta2, built2 = cache.open_or_build(paths, SIZE, root=tmp_path / "node2", storage=f"file://{storage}")
    assert not built2 and meta2["source"] == "downloaded" and meta2["key"] == meta1["key"]
    assert np.array_equal(first, second) and meta2["bad"] == meta1["bad"]  # decoded, every row would be bad
    assert "downloaded from" in capsys.readouterr().err
    third, meta3, built3 = cache.open_or_build(paths, SIZE, root=tmp_path / "node3")
    assert built3 and len(meta3["bad"]) == len(paths)  # proof that a build would have decoded garbage


@pytest.mark.unit
def test_storage_failures_only_warn(tmp_path, capsys):
    paths, _ = mixed_folder(tmp_path / "images", n_jpeg=4)
    (tmp_path / "plain_file").write_text("")
    storage = str(tmp_path / "plain_file" / "results")  # under a file: cannot be read or written
    images, meta, built = cache.open_or_build(paths, SIZE, root=tmp_path / "node1", storage=storage)
    assert built and meta["source"] == "built" and images[0].any() and "could not publish" in capsys.readouterr().err
    good = tmp_path / "ray_results"
    _, meta, _ = cache.open_or_build(paths, SIZE, root=tmp_path / "node2", storage=str(good))
    published = good / "decoded" / meta["key"] / "images.npy"
    published.write_bytes(published.read_bytes()[:-100])  # a damaged upload: the next node builds instead
    again, meta, built = cache.open_or_build(paths, SIZE, root=tmp_path / "node3", storage=str(good))
    assert built and meta["source"] == "built" and np.array_equal(again, images)
    assert "could not download" in capsys.readouterr().err and not list((tmp_path / "node3").glob("*/*download*"))
    _, meta, built = cache.open_or_build(paths, SIZE, root=tmp_path / "node4", storage=str(good))
    assert not built and meta["source"] == "downloaded"  # node3 replaced the damaged copy


@pytest.mark.unit
def test_a_pickled_dataset_reopens_the_cache_by_name(tiny_folder, tmp_path):
    """What a spawned loader process gets (macOS, Python 3.14's forkserver): the cache's file name, not its pixels."""
    import pickle

    paths = scan(tiny_folder).paths
    images, _, _ = cache.open_or_build(paths, SIZE, root=tmp_path)
    ds = loaders.CachedImages(images, range(4), [0, 1, 2, 3], torch.clone)
    state = pickle.dumps(ds)
    assert len(state) < 4096  # no pixels in it
    again = pickle.loads(state)
    assert isinstance(again.images, np.memmap) and torch.equal(again[2][0], ds[2][0])
