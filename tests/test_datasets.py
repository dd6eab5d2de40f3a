"""Messy real-world folders and CSV manifests: every case is decoded or skipped as described."""

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.data import dataset, decode
from trainables.data.scan import scan

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(0)


def rgb(w=40, h=30):
    return Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    a, b, empty = root / "baroque", root / "cubism", root / "empty_style"
    (a / "nested" / "deeper").mkdir(parents=True)
    b.mkdir()
    empty.mkdir()
    buf = io.BytesIO()
    rgb().save(buf, "WEBP")
    (a / "webp_bytes.jpg").write_bytes(buf.getvalue())  # WebP named .jpg
    rgb().convert("CMYK").save(a / "cmyk.jpg")  # CMYK JPEG
    rgb().convert("RGBA").convert("P").save(a / "palette_alpha.png", transparency=0)
    Image.fromarray(RNG.integers(0, 65535, (30, 40), dtype=np.uint16)).save(a / "deep16.png")  # 16-bit PNG
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rgb(40, 20).save(a / "rotated.jpg", exif=exif)
    rgb().save(a / "nested" / "deeper" / "inner.png")  # nested sub-folders
    rgb().save(b / "Ça_été_ピカソ.jpg")  # non-ASCII name
    good = io.BytesIO()
    rgb().save(good, "JPEG")
    (b / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (b / "zero.jpg").write_bytes(b"")
    (b / "notes.png").write_text("this is not an image")
    (b / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (b / "._cmyk.jpg").write_bytes(b"\0\5\26\7")  # macOS resource fork
    rgb().save(b / "ok.png")
    return root


def test_folder_scan_decodes_or_skips_each_case(messy):
    source = scan(messy)
    assert source.classes == ["baroque", "cubism"]  # the empty folder is left out
    assert any("empty_style" in w for w in source.warnings)
    names = {p.rsplit("/", 1)[1] for p in source.paths}
    assert names == {
        "webp_bytes.jpg",
        "cmyk.jpg",
        "palette_alpha.png",
        "deep16.png",
        "rotated.jpg",
        "inner.png",
        "Ça_été_ピカソ.jpg",
        "ok.png",
    }
    reasons = {p.rsplit("/", 1)[1]: r for p, r in source.skipped}
    assert set(reasons) == {"truncated.jpg", "zero.jpg", "notes.png"}  # hidden files are not even listed
    assert "truncated" in reasons["truncated.jpg"] and "zero-byte" in reasons["zero.jpg"]
    assert "not an image" in reasons["notes.png"]
    for path in source.paths:
        img = decode.decode_rgb(path)
        assert img.dtype == torch.uint8 and img.shape[0] == 3
    rotated = next(p for p in source.paths if p.endswith("rotated.jpg"))
    assert decode.decode_rgb(rotated).shape[1:] == (40, 20)  # EXIF orientation applied


def test_decompression_bomb_sized_image_is_decoded_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "MAX_FULL_DECODE_PIXELS", 1000)  # pretend 80x60 is enormous
    rgb(80, 60).save(tmp_path / "big.jpg")
    img = decode.decode_rgb(tmp_path / "big.jpg", max_side=8)
    assert img.shape[0] == 3 and max(img.shape[1:]) <= 32


def test_csv_manifest_with_and_without_split(messy, tmp_path):
    rows = [
        ("baroque/cmyk.jpg", "baroque", "train"),
        ("baroque/rotated.jpg", "baroque", "val"),
        ("cubism/ok.png", "cubism", "train"),
        ("cubism/zero.jpg", "cubism", "test"),
        ("cubism/missing.jpg", "cubism", "test"),
    ]
    for with_split in (True, False):
        path = messy / ("with_split.csv" if with_split else "plain.csv")
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "split"] if with_split else ["path", "label"])
            w.writerows(r if with_split else r[:2] for r in rows)
        source = scan(path)
        assert source.classes == ["baroque", "cubism"] and len(source.paths) == 3
        assert {r.split(" ")[0] for _, r in source.skipped} == {"zero-byte", "listed"}
        splits = dataset.make_splits(source, 0.2, 0.2, seed=0)
        if with_split:
            assert [len(splits.train), len(splits.val), len(splits.test)] == [2, 1, 0]
        else:  # classes of < 3 images: train only, with a warning instead of an exception
            assert len(splits.train) == 3 and any("fewer than 3" in w for w in source.warnings)


def test_manifest_round_trip_keeps_split_and_class_order(tiny_folder, tmp_path):
    splits = dataset.make_splits(scan(tiny_folder), 0.2, 0.2, seed=4)
    back = dataset.read_manifest(dataset.write_manifest(splits, tmp_path / "s.csv"), splits.classes)
    for part in ("train", "val", "test"):
        assert [back.paths[i] for i in getattr(back, part)] == [splits.paths[i] for i in getattr(splits, part)]
    assert np.array_equal(back.labels, splits.labels)
    again = dataset.make_splits(scan(tiny_folder), 0.2, 0.2, seed=4)
    assert np.array_equal(again.val, splits.val)  # same dataset + seed = same split


def test_bad_csv_is_a_clear_error(tmp_path):
    (tmp_path / "m.csv").write_text("file,class\na.jpg,x\n")
    with pytest.raises(dataset.DataError, match="needs a 'path' column and the label column 'label'"):
        scan(tmp_path / "m.csv")


def test_dataset_report_and_plots(messy, tmp_path):
    from trainables.data.report import dataset_report, plot, summary_lines

    source = scan(messy)
    report = dataset_report(source, dataset.make_splits(source, 0.2, 0.2, seed=0))
    assert report["formats"] == {"WEBP": 1, "JPEG": 3, "PNG": 4} and len(report["skipped"]) == 3
    assert np.allclose(report["sampled_share"]["1.0"], 0.5) and "3 skipped" in summary_lines(report)[0]
    for png in plot(report, tmp_path):
        with Image.open(png) as im:
            assert im.size[0] > 100 and im.size[1] > 100 and np.asarray(im).std() > 0
