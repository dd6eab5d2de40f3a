"""What --data holds -> dataset.Source: usable images (references, trainables.data.storage), labels, versions, and
what was skipped and why. DataError says what is wrong and what to do, in one line.

--data is a local path or a URI (s3://, gs://, file://, anything pyarrow.fs opens) to
- a folder of class folders: DATA/<class>/<...>/<image>;
- a CSV manifest: path,<label>[,split]; paths relative to the CSV's folder, or absolute (URIs too);
- Parquet shards: one .parquet file, a folder holding .parquet files at any depth, or a glob (DATA/train-*.parquet),
  in the Hugging Face layout (trainables.data.parquet).
--label COLUMN picks the label column of a CSV or Parquet source (default `label`, else the only candidate).
Local files are checked one by one here (header and tail: decode.check). Objects in a bucket and Parquet rows are
listed, not opened: a read of each would move every byte twice. The decode cache's build decodes each image once
and lists the undecodable (cache meta["bad"]), which trials and evaluation leave out. One object is read here, so a
denied read stops the study before Ray starts, not minutes into it.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trainables.data import decode, parquet, storage
from trainables.data.dataset import DataError, Source

LABEL = "label"  # the label column when --label is not given
SPLITS = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
LAYOUT = "pass a folder with one sub-folder per class, a CSV manifest (path,label[,split]) or Parquet shards"


def scan(data: str | Path, label: str | None = None) -> Source:
    """Scan a class-folder tree, a CSV manifest or Parquet shards, local or remote."""
    data = storage.local(str(data))
    try:
        filesystem, path = storage.resolve(data)
        kind, target = _kind(filesystem, path, data, label)
        if kind == "parquet":
            source = _parquet(filesystem, target, data, label)
        elif kind == "csv":
            source = _csv(filesystem, path, data, label or LABEL)
        elif filesystem.type_name == "local":
            source = _folder(Path(path))
        else:
            source = _objects(filesystem, path, data)
    except storage.StorageError as e:
        raise DataError(f"--data {e}") from None
    except OSError as e:  # a missing bucket, a denied listing, an unreachable endpoint
        raise DataError(f"--data {storage.redact(data)}: cannot read it: {storage.reason(e)}") from None
    if len(source.classes) < 2:
        what = "class sub-folder(s)" if source.origin["kind"] in ("folder", "objects") else "class(es)"
        raise DataError(
            f"--data {storage.redact(data)}: found {len(source.classes)} {what} with usable images; need at "
            f"least 2 ({LAYOUT})"
        )
    return source


def _kind(filesystem, path: str, data: str, label: str | None) -> tuple[str, list[str]]:
    """("folder" | "csv" | "parquet", the Parquet files)."""
    from pyarrow import fs as pafs

    if any(c in path for c in "*?["):
        return "parquet", _glob(filesystem, path, data)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        bucket = path.split("/", 1)[0]
        if filesystem.type_name != "local" and filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise DataError(f"--data {storage.redact(data)}: the bucket {bucket!r} does not exist (or is not visible)")
        raise DataError(f"--data {storage.redact(data)}: no such folder, file or object; {LAYOUT}")
    if info.type == pafs.FileType.File:
        if path.endswith(".parquet"):
            return "parquet", [path]
        if path.endswith(".csv") or filesystem.type_name == "local":
            return "csv", []
        raise DataError(f"--data {storage.redact(data)}: a file must be a .csv manifest or a .parquet shard")
    shards = _parquet_files(filesystem, path)
    if shards:
        return "parquet", shards
    if label:
        raise DataError(
            f"--label {label}: a folder of class folders has no columns (its labels are its sub-folder names); "
            "--label picks a column of a CSV manifest or of Parquet shards"
        )
    return "folder", []


def _parquet_files(filesystem, path: str) -> list[str]:
    if filesystem.type_name == "local":
        return sorted(str(p) for p in Path(path).rglob("*.parquet") if not _hidden(p, Path(path)))
    from pyarrow import fs as pafs

    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))


def _glob(filesystem, pattern: str, data: str) -> list[str]:
    from pyarrow import fs as pafs

    base = pattern[: min(pattern.index(c) for c in "*?[" if c in pattern)].rsplit("/", 1)[0]
    infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    found = sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern))
    if not found:
        raise DataError(f"--data {storage.redact(data)}: no file matches the pattern; {LAYOUT}")
    if not all(f.endswith(".parquet") for f in found):
        raise DataError(f"--data {storage.redact(data)}: a pattern must match .parquet shards only")
    return found


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)  # .DS_Store, ._x, .git/...


def _checked(path: Path, skipped: list, info: list, versions: list) -> bool:
    try:
        info.append(decode.check(path))
        st = path.stat()
        versions.append(f"{st.st_size}:{st.st_mtime_ns}")
        return True
    except (decode.BadImage, OSError) as e:
        skipped.append((str(path), str(e)))
        return False


def _folder(root: Path) -> Source:
    """One sub-folder per class, image files at any depth; format checked by content, not extension."""
    classes, paths, labels, skipped, warnings, info, versions = [], [], [], [], [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [p for p in sorted(d.rglob("*")) if p.is_file() and not _hidden(p, root)]
        good = [str(p) for p in files if _checked(p, skipped, info, versions)]
        if not good:
            warnings.append(f"class folder {d.name!r} holds no usable image; left out")
            continue
        labels += [len(classes)] * len(good)
        classes.append(d.name)
        paths += good
    origin = {"data": str(root), "kind": "folder"}
    return Source(classes, paths, np.asarray(labels, dtype=np.int64), None, skipped, warnings, info, versions, origin)


def _objects(filesystem, path: str, data: str) -> Source:
    """A bucket's class folders: one listing (names, sizes, versions), one object read as a probe."""
    from pyarrow import fs as pafs

    scheme = data.split("://", 1)[0]
    by_class: dict[str, list] = {}
    skipped = []
    for i in filesystem.get_file_info(pafs.FileSelector(path, recursive=True)):
        rel = i.path[len(path.rstrip("/")) + 1 :].split("/")
        if i.type != pafs.FileType.File or len(rel) < 2 or any(p.startswith(".") for p in rel):
            continue
        if i.size == 0:
            skipped.append((storage.ref_of(filesystem, i.path, scheme), "zero-byte file"))
            continue
        by_class.setdefault(rel[0], []).append(i)
    classes = sorted(by_class)
    infos = [i for c in classes for i in sorted(by_class[c], key=lambda i: i.path)]
    paths = [storage.ref_of(filesystem, i.path, scheme) for i in infos]
    labels = np.repeat(np.arange(len(classes)), [len(by_class[c]) for c in classes]).astype(np.int64)
    if paths:
        _probe(paths[0], data)
    origin = {"data": storage.redact(data), "kind": "objects"}
    versions = [storage.version(i) for i in infos]
    return Source(classes, paths, labels, None, skipped, [], [], versions, origin)


def _probe(ref: str, data: str) -> None:
    """Reads one image's bytes: a listing may be allowed where reading is not."""
    _, got, why = next(storage.read([ref]))
    if got is None:
        raise DataError(f"--data {storage.redact(data)}: listed, but its objects cannot be read: {why}")


def _split_names(values: list, data: str) -> list[str]:
    names = [SPLITS.get(str(v).strip().lower(), None) if v is not None else None for v in values]
    bad = sorted({str(v) for v, n in zip(values, names) if n is None})
    if bad:
        raise DataError(f"--data {storage.redact(data)}: split values must be train/val/test, found {bad[:5]}")
    return names


def _csv(filesystem, path: str, data: str, label: str) -> Source:
    """A CSV manifest with `path` and `label` (or --label's) columns, optionally `split`."""
    with filesystem.open_input_stream(path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read().decode("utf-8"), newline="")))
    columns = list(rows[0]) if rows else []
    if "path" not in columns or label not in columns:
        raise DataError(
            f"--data {storage.redact(data)}: a CSV manifest needs a 'path' column and the label column "
            f"{label!r} (--label picks it); it has {columns}"
        )
    local = filesystem.type_name == "local"
    base = str(Path(path).parent) if local else f"{data.split('://', 1)[0]}://{path.rsplit('/', 1)[0]}"
    refs = [_relative_to(base, r["path"], local) for r in rows]
    split = _split_names([r.get("split") for r in rows], data) if "split" in columns else None
    keep, skipped, info, versions = [], [], [], []
    remote_versions = dict(zip(*_remote_listed([r for r in refs if storage.remote(r)])))
    for n, ref in enumerate(refs):
        if not storage.remote(ref):
            if not Path(ref).is_file():
                skipped.append((ref, "listed in the CSV but missing"))
            elif _checked(Path(ref), skipped, info, versions):
                keep.append(n)
        elif remote_versions.get(ref):
            keep.append(n)
            versions.append(remote_versions[ref])
        else:
            skipped.append((ref, "listed in the CSV but missing"))
    classes = sorted({rows[n][label] for n in keep}, key=_natural)
    index = {c: i for i, c in enumerate(classes)}
    origin = {"data": storage.redact(data), "kind": "csv", "label": label}
    return Source(
        classes,
        [refs[n] for n in keep],
        np.asarray([index[rows[n][label]] for n in keep], dtype=np.int64),
        [split[n] for n in keep] if split else None,
        skipped,
        [],
        info,
        versions,
        origin,
    )


def _relative_to(base: str, path: str, local: bool) -> str:
    """A CSV row's path as a reference: URIs as they are (file:// made local), others under the CSV's folder."""
    if storage.is_uri(path):
        return storage.local(path)
    return str((Path(base) / path).resolve()) if local else f"{base}/{path.lstrip('/')}"


def _remote_listed(refs: list[str]) -> tuple[list[str], list[str]]:
    if not refs:
        return [], []
    _probe(refs[0], refs[0])
    return refs, storage.versions(refs)


def _pick_label(schema, label: str | None, image: str | None, data: str) -> str:
    candidates = parquet.label_columns(schema, image)
    if label:
        if label not in schema.names:
            raise DataError(f"--label {label}: no such column in {storage.redact(data)}; its columns: {candidates}")
        return label
    if LABEL in candidates or len(candidates) == 1:
        return LABEL if LABEL in candidates else candidates[0]
    raise DataError(
        f"--data {storage.redact(data)} has {len(candidates)} label columns {candidates}: pick one with --label"
    )


def _shard_table(filesystem, path: str, columns: list[str]):
    pf = parquet.open_file(filesystem, path)
    info = filesystem.get_file_info(path)
    return pf.read(columns=columns), storage.version(info), pf.schema_arrow


def _parquet(filesystem, shards: list[str], data: str, label: str | None) -> Source:
    """Parquet shards: the label (and split) columns are read, the image column is not."""
    scheme = data.split("://", 1)[0] if storage.remote(data) else ""
    schema = parquet.open_file(filesystem, shards[0]).schema_arrow
    image = parquet.image_column(schema)
    if image is None:
        raise DataError(
            f"--data {storage.redact(data)}: no image column (a struct with a 'bytes' field, as `datasets` writes, "
            f"or a binary column named {parquet.IMAGE_NAMES[0]!r}); its columns: {schema.names}"
        )
    label = _pick_label(schema, label, image, data)
    columns = [label] + ([parquet.SPLIT] if parquet.SPLIT in schema.names else [])
    threads = min(storage.THREADS, len(shards)) if scheme else 1
    with ThreadPoolExecutor(threads) as pool:
        read = list(pool.map(lambda p: _shard_table(filesystem, p, columns), shards))
    names = parquet.class_names(schema, label)
    values, refs, versions, split = [], [], [], []
    for path, (table, version, shard_schema) in zip(shards, read):
        if shard_schema.names != schema.names:
            raise DataError(
                f"--data {storage.redact(data)}: {os.path.basename(path)}'s columns differ from the first shard's"
            )
        ref = storage.ref_of(filesystem, path, scheme)
        values += table.column(label).to_pylist()
        refs += [f"{ref}{storage.ROW}{r}" for r in range(table.num_rows)]
        versions += [version] * table.num_rows
        split += table.column(parquet.SPLIT).to_pylist() if parquet.SPLIT in table.column_names else []
    return _labelled(values, refs, versions, split or None, names, data, {"image_column": image, "label": label})


def _labelled(values, refs, versions, split, names, data, origin) -> Source:
    """Rows with a label (a ClassLabel's -1 and nulls are skipped) -> Source; classes in the ClassLabel's order,
    else sorted; a named class no row has is left out with a warning."""
    keep = [n for n, v in enumerate(values) if v is not None and not (names and (v < 0 or v >= len(names)))]
    kept = set(keep)
    skipped = [(refs[n], "no label") for n in range(len(values)) if n not in kept]
    as_name = (lambda v: names[v]) if names else str
    present = {as_name(values[n]) for n in keep}
    classes = [c for c in names if c in present] if names else sorted(present, key=_natural)
    absent = [c for c in names or [] if c not in present]
    warnings = [f"classes no row holds, left out: {absent}"] if absent else []
    index = {c: i for i, c in enumerate(classes)}
    given = _split_names([split[n] for n in keep], data) if split else None
    return Source(
        classes,
        [refs[n] for n in keep],
        np.asarray([index[as_name(values[n])] for n in keep], dtype=np.int64),
        given,
        skipped,
        warnings,
        [],
        [versions[n] for n in keep],
        {"data": storage.redact(data), "kind": "parquet", **origin},
    )


def _natural(name: str):
    """Integer-looking names in numeric order (2 before 10), the rest after them, alphabetically."""
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)
