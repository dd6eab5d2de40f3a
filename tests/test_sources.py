"""--data where it lives, on real files: Parquet shards in the Hugging Face layout (any label column, class names
from the schema), globs, CSV label columns, versions that pin a study to its bytes, and the refusals that stop a
study before Ray starts. Object stores: tests/test_sources_s3.py."""

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import TINY_COUNTS
from tests.parquet_set import PERIOD, PERIODS, write_shards
from trainables.data import cache, dataset, parquet, storage
from trainables.data.scan import scan

pytestmark = pytest.mark.unit
SIZE = 24


@pytest.fixture(scope="module")
def shards(tiny_folder, tmp_path_factory):
    return write_shards(tiny_folder, tmp_path_factory.mktemp("parquet") / "data", shards=3, row_group=10)


def _names(paths: list[str]) -> list[str]:
    """Each reference's image name: a file's own, a Parquet row's `image.path`."""
    out = []
    for ref in paths:
        file, row = storage.split_row(ref)
        out.append(os.path.basename(file) if row is None else _row_names(file)[row])
    return out


_tables: dict = {}


def _row_names(file: str) -> list[str]:
    if file not in _tables:
        _tables[file] = [c["path"] for c in pq.read_table(file, columns=["image"]).column("image").to_pylist()]
    return _tables[file]


def test_parquet_shards_give_each_label_column_its_classes(shards, tiny_folder):
    folder = scan(tiny_folder)
    by_style = scan(shards[0].parent, label="style")
    assert by_style.classes == folder.classes  # the ClassLabel's names, in its order
    assert sorted(np.bincount(by_style.labels).tolist()) == sorted(TINY_COUNTS.values())
    assert by_style.origin == {
        "data": str(shards[0].parent),
        "kind": "parquet",
        "image_column": "image",
        "label": "style",
    }
    assert all(storage.split_row(p)[1] is not None for p in by_style.paths) and len(by_style.versions) == 84
    by_period = scan(shards[0].parent, label="period")
    present = {PERIOD[s] for s in TINY_COUNTS}
    assert by_period.classes == [p for p in PERIODS if p in present]  # schema order, absent ones left out
    assert any("left out" in w for w in by_period.warnings)
    # the same rows in the same order, each labelled by its style's period
    assert by_period.paths == by_style.paths
    styles = [by_style.classes[c] for c in by_style.labels]
    assert [by_period.classes[c] for c in by_period.labels] == [PERIOD[s] for s in styles]


def test_a_parquet_cache_holds_the_folders_pixels(shards, tiny_folder, tmp_path):
    """Rows read by row group from the shards decode to the same cache rows as the files they were written from."""
    rows = scan(shards[0].parent, label="style")
    files = scan(tiny_folder)
    from_rows, meta, _ = cache.open_or_build(rows.paths, SIZE, root=tmp_path / "r", versions=rows.versions, processes=1)
    from_files, _, _ = cache.open_or_build(files.paths, SIZE, root=tmp_path / "f", versions=files.versions)
    where = {(files.classes[c], os.path.basename(p)): i for i, (p, c) in enumerate(zip(files.paths, files.labels))}
    order = [where[(rows.classes[c], n)] for c, n in zip(rows.labels, _names(rows.paths))]
    assert meta["bad"] == [] and np.array_equal(from_rows, from_files[order])


def test_decode_tasks_never_split_a_row_group(shards):
    refs = scan(shards[0].parent, label="style").paths
    starts = {str(s): parquet.row_group_starts(pq.ParquetFile(s)) for s in shards}
    spans = storage.tasks(refs, 64)
    assert [i for a, b in spans for i in range(a, b)] == list(range(len(refs)))
    for a, b in spans:
        files = {storage.split_row(r)[0] for r in refs[a:b]}
        rows = [storage.split_row(r)[1] for r in refs[a:b]]
        groups = {np.searchsorted(starts[next(iter(files))], r, side="right") for r in rows}
        assert len(files) == 1 and len(groups) == 1  # one shard, one row group: each group read once


def test_globs_single_shards_and_split_columns(shards, tmp_path):
    two = scan(str(shards[0].parent / "train-0000[01]-*.parquet"), label="style")
    assert {storage.split_row(p)[0] for p in two.paths} == {str(s) for s in shards[:2]}
    one = scan(f"file://{shards[2]}", label="period")
    assert {storage.split_row(p)[0] for p in one.paths} == {str(shards[2])}
    # a split column is honoured, and a row with no label (ClassLabel -1) is skipped, not guessed
    table = pq.read_table(shards[0])
    n = table.num_rows
    split = (["train"] * (n - 8)) + ["validation"] * 4 + ["test"] * 4
    style = table.column("style").to_pylist()
    style[0] = -1
    table = table.set_column(1, "style", pa.array(style, pa.int64())).append_column("split", pa.array(split))
    pq.write_table(table, tmp_path / "with_split.parquet")
    source = scan(tmp_path / "with_split.parquet", label="style")
    assert len(source.paths) == n - 1 and source.skipped[0][1] == "no label"
    splits = dataset.make_splits(source, 0.2, 0.2, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (n - 9, 4, 4)


def test_csv_label_column_and_natural_order_of_integer_classes(tiny_folder, tmp_path):
    files = scan(tiny_folder)
    lines = ["path,style,period"] + [
        f"{p},{files.classes[c]},{PERIODS.index(PERIOD[files.classes[c]]) * 5}"
        for p, c in zip(files.paths, files.labels)
    ]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    assert scan(tmp_path / "m.csv", label="style").classes == files.classes
    by_period = scan(tmp_path / "m.csv", label="period")
    assert by_period.classes == sorted(by_period.classes, key=int) and "10" in by_period.classes  # 5 < 10
    with pytest.raises(dataset.DataError, match="label column 'genre'"):
        scan(tmp_path / "m.csv", label="genre")


def test_what_cannot_work_is_refused_in_one_line(shards, tiny_folder, tmp_path):
    cases = [
        (lambda: scan(shards[0].parent), "2 label columns \\['style', 'period'\\]: pick one with --label"),
        (lambda: scan(shards[0].parent, label="genre"), "--label genre: no such column"),
        (lambda: scan(tiny_folder, label="style"), "a folder of class folders has no columns"),
        (lambda: scan(tmp_path / "nowhere"), "no such folder, file or object"),
        (lambda: scan(str(tmp_path / "empty" / "*.parquet")), "no file matches"),
        (lambda: scan("s3://bucket/x?access_key=AKIA&secret_key=s3cr3t"), "go in the environment"),
    ]
    pq.write_table(pq.read_table(shards[0], columns=["style", "period"]), tmp_path / "no_images.parquet")
    cases.append((lambda: scan(tmp_path / "no_images.parquet", label="style"), "no image column"))
    for call, message in cases:
        with pytest.raises(dataset.DataError, match=message) as e:
            call()
        assert "\n" not in str(e.value) and "s3cr3t" not in str(e.value)


def test_versions_pin_a_study_to_its_bytes(tiny_folder, tmp_path):
    data = shutil.copytree(tiny_folder, tmp_path / "data")
    splits = dataset.make_splits(scan(data), 0.2, 0.2, seed=0)
    back = dataset.read_manifest(dataset.write_manifest(splits, tmp_path / "s.csv"), splits.classes)
    assert back.versions == splits.versions and all(back.versions)
    _, _, built = cache.open_or_build(back.paths, SIZE, root=tmp_path / "c", versions=back.versions)
    assert built
    changed = back.paths[5]
    with open(changed, "ab") as f:
        f.write(b"\0")  # a changed file: the study's cache still serves the scanned pixels...
    _, _, built = cache.open_or_build(back.paths, SIZE, root=tmp_path / "c", versions=back.versions)
    assert not built
    with pytest.raises(dataset.DataError, match=r"1 of the study's 84 images changed or are missing .*"):
        cache.open_or_build(back.paths, SIZE, root=tmp_path / "other", versions=back.versions)  # ...no new build
    os.remove(back.paths[6])
    with pytest.raises(dataset.DataError, match="2 of the study's 84 images") as e:
        cache.open_or_build(back.paths, SIZE, root=tmp_path / "other", versions=back.versions)
    assert changed in str(e.value) and "\n" not in str(e.value)
