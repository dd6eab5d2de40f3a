"""Where images live, and reading them by reference: a local path or a URI that pyarrow.fs opens (s3://, gs://,
hdfs://; file:// is a local path).

A reference (the `path` of a split manifest row) is one of
    /data/wikiart/Impressionism/1.jpg           a local file
    s3://bucket/wikiart/Impressionism/1.jpg     an object, read whole into memory (never copied to local disk)
    s3://bucket/wikiart/train-00003.parquet#row=12
    /data/wikiart/train-00003.parquet#row=12    row 12 (0-based, in the file) of a Parquet shard's image column
Options and credentials come from the environment (AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID... or the
node's instance profile; GOOGLE_APPLICATION_CREDENTIALS), never from the URI: a study records its --data in MLflow.
A version is "<size in bytes>:<mtime in ns>" of the file or object (a Parquet row: its shard's), as listed at
scan time; the decode cache is keyed by them and refuses to build from files whose version changed.
"""

from __future__ import annotations

import bisect
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence
from urllib.parse import urlsplit

from trainables.paths import local_path, remote  # remote: a URI that is not file:// (storage.remote(ref))

ROW = "#row="
# Concurrent GETs per reading process: an object store answers in ~20-100 ms, a 200 KB JPEG decodes in ~5 ms,
# so a decoding process keeps this many reads in flight to stay busy.
THREADS = 8
# Above this many files under one parent folder, their versions come from one listing of the folder (S3: one
# request per 1,000 objects) instead of one HEAD each.
LIST_FROM = 4


class StorageError(OSError):
    """A location that cannot be read; str() says what and, where it can, why (missing bucket, access denied)."""


def is_uri(s: str) -> bool:
    return "://" in s


def local(s: str) -> str:
    """A local path for a local path or file:// URI (other URIs unchanged): trainables.paths.local_path's rule."""
    return local_path(s) or s


def resolve(location: str):
    """(pyarrow FileSystem, path inside it) for a local path or URI; StorageError if the scheme is unknown or the
    URI carries options (they belong in the environment)."""
    from pyarrow import fs as pafs

    location = local(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())
    parts = urlsplit(location)
    if parts.query or parts.username or parts.password:
        raise StorageError(
            f"{redact(location)}: options and credentials go in the environment (AWS_ENDPOINT_URL_S3, AWS_REGION, "
            "AWS_ACCESS_KEY_ID...), not in the URI, which the study records"
        )
    try:
        return pafs.FileSystem.from_uri(location)
    except Exception as e:
        raise StorageError(f"{location}: {reason(e)}") from None


def redact(location: str) -> str:
    """A URI without its query and user info, for messages."""
    if not is_uri(location):
        return location
    p = urlsplit(location)
    return f"{p.scheme}://{p.hostname or ''}{p.path}"


def ref_of(filesystem, path: str, scheme: str) -> str:
    """The reference of `path` inside `filesystem`: a local path, or scheme://path."""
    return path if filesystem.type_name == "local" else f"{scheme}://{path}"


def split_row(ref: str) -> tuple[str, int | None]:
    """(file, Parquet row or None)."""
    file, sep, row = ref.rpartition(ROW)
    return (file, int(row)) if sep else (ref, None)


def reason(e: BaseException) -> str:
    """One line on why a read failed, from pyarrow's or the OS's message (missing bucket, access denied, ...)."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    for code, said in (
        ("NO_SUCH_BUCKET", "the bucket does not exist"),
        ("NoSuchBucket", "the bucket does not exist"),
        ("ACCESS_DENIED", "access denied"),
        ("AccessDenied", "access denied"),
        ("InvalidAccessKeyId", "the access key is not known to the store"),
        ("INVALID_ACCESS_KEY_ID", "the access key is not known to the store"),
        ("SignatureDoesNotMatch", "the secret key does not match the access key"),
        ("SIGNATURE_DOES_NOT_MATCH", "the secret key does not match the access key"),
        ("Forbidden", "access denied"),
    ):
        if code in text:
            return f"{said} ({text[:160]})"
    return text[:200]


def version(info) -> str:
    """A pyarrow FileInfo's version: size and modification time (ns; 0 where the store gives none)."""
    return f"{info.size}:{info.mtime_ns or 0}"


def read_bytes(ref: str) -> bytes:
    """One reference's bytes (a file, an object, or a Parquet row's image); StorageError with the reason."""
    _, data, why = next(read([ref]))
    if data is None:
        raise StorageError(f"{ref}: {why}")
    return data


def read(refs: Sequence[str] | Iterator[str]) -> Iterator[tuple[int, bytes | None, str]]:
    """(position in refs, the bytes or None, why None) for every ref, in order. Local files are read in turn,
    objects THREADS at a time, consecutive rows of one Parquet shard from one open of the shard (parquet.read_rows)."""
    refs = list(refs)
    runs = itertools.groupby(range(len(refs)), key=lambda i: split_row(refs[i])[1] is not None)
    for is_row, run in runs:
        run = list(run)
        if is_row:
            yield from _rows(refs, run)
        elif remote(refs[run[0]]):
            with ThreadPoolExecutor(min(THREADS, len(run))) as pool:
                yield from pool.map(lambda i: _object(i, refs[i]), run)
        else:
            yield from (_file(i, refs[i]) for i in run)


def _file(i: int, ref: str) -> tuple[int, bytes | None, str]:
    try:
        return i, Path(local(ref)).read_bytes(), ""
    except OSError as e:
        return i, None, f"unreadable ({reason(e)})"


def _object(i: int, ref: str) -> tuple[int, bytes | None, str]:
    try:
        filesystem, path = resolve(ref)
        with filesystem.open_input_stream(path) as f:
            return i, f.read(), ""
    except Exception as e:  # a deleted object, a denied read, a dropped connection: this image is left out
        return i, None, f"unreadable ({reason(e)})"


def _rows(refs: Sequence[str], run: list[int]) -> Iterator[tuple[int, bytes | None, str]]:
    from trainables.data import parquet

    for file, group in itertools.groupby(run, key=lambda i: split_row(refs[i])[0]):
        group = list(group)
        rows = [split_row(refs[i])[1] for i in group]
        try:
            filesystem, path = resolve(file)
            got = parquet.read_rows(filesystem, path, rows)
        except Exception as e:
            why = f"unreadable shard ({reason(e)})"
            yield from ((i, None, why) for i in group)
            continue
        for i, data in zip(group, got):
            yield (i, data, "") if data else (i, None, "empty image cell")


def tasks(refs: Sequence[str], size: int) -> list[tuple[int, int]]:
    """[start, end) ranges of refs, one per decode task: `size` refs each, but the rows of a Parquet shard go by
    whole row groups (a task reading part of a row group would read all of it, and the next task again)."""
    from trainables.data import parquet

    out = []
    for (file, is_row), run in itertools.groupby(range(len(refs)), key=lambda i: _shard_of(refs[i])):
        run = list(run)
        if not is_row:
            out += [(i, min(i + size, run[-1] + 1)) for i in range(run[0], run[-1] + 1, size)]
            continue
        try:
            filesystem, path = resolve(file)
            starts = parquet.row_group_starts(parquet.open_file(filesystem, path))
        except Exception:  # unreadable here: the task's own read says why, for each row
            starts = [0]
        groups = itertools.groupby(run, key=lambda i: bisect.bisect_right(starts, split_row(refs[i])[1]))
        for _, g in groups:
            g = list(g)
            out.append((g[0], g[-1] + 1))
    return out


def _shard_of(ref: str) -> tuple[str, bool]:
    file, row = split_row(ref)
    return (file, True) if row is not None else ("", False)


def versions(refs: Sequence[str]) -> list[str]:
    """The current version of each reference's file or object (a Parquet row: its shard's); "" if it is gone."""
    files = [split_row(r)[0] for r in refs]
    found: dict[str, str] = {}
    by_parent = itertools.groupby(sorted(set(files)), key=lambda f: f.rsplit("/", 1)[0])
    for parent, group in by_parent:
        group = list(group)
        if not remote(parent):
            for f in group:
                try:
                    st = os.stat(local(f))
                    found[f] = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:
                    found[f] = ""
            continue
        found.update(_remote_versions(parent, group))
    return [found[f] for f in files]


def _remote_versions(parent: str, files: list[str]) -> dict[str, str]:
    from pyarrow import fs as pafs

    filesystem, path = resolve(parent)
    scheme = urlsplit(parent).scheme
    if len(files) > LIST_FROM:
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    else:
        infos = filesystem.get_file_info([resolve(f)[1] for f in files])
    listed = {ref_of(filesystem, i.path, scheme): version(i) for i in infos if i.type == pafs.FileType.File}
    return {f: listed.get(f, "") for f in files}
