"""Parquet shards of encoded images in the layout the Hugging Face `datasets` library writes (how WikiArt and most
image sets on the Hub are published): an image column (struct<bytes: binary, path: string>, or plain binary), label
columns (ClassLabel: int64 indices whose names sit in the schema's b"huggingface" metadata; or plain strings or
integers) and, optionally, a `split` column. Reading goes by row group, the smallest unit Parquet can read alone.
"""

from __future__ import annotations

import bisect
import json
from typing import Sequence

IMAGE_NAMES = ("image", "img", "picture", "bytes", "jpg", "png")  # a plain binary image column, by name
SPLIT = "split"


def features(schema) -> dict:
    """The `datasets` features in the schema's metadata ({} without): {column: {"_type": "ClassLabel", "names": [..]}}."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def _has_bytes(t) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(t):
        return any(t.field(i).name == "bytes" and _has_bytes(t.field(i).type) for i in range(t.num_fields))
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def image_column(schema) -> str | None:
    """The column holding encoded images: the one `datasets` calls an Image, else a struct with a `bytes` field,
    else a binary column with an image-like name."""
    import pyarrow as pa

    feats = features(schema)
    for name in schema.names:
        if feats.get(name, {}).get("_type") == "Image" and _has_bytes(schema.field(name).type):
            return name
    held = [n for n in schema.names if _has_bytes(schema.field(n).type)]
    structs = [n for n in held if pa.types.is_struct(schema.field(n).type)]
    return structs[0] if structs else next((n for n in IMAGE_NAMES if n in held), None)


def label_columns(schema, image: str | None) -> list[str]:
    """Columns that can serve as labels: ClassLabel features, integer and string columns (not the image or split)."""
    import pyarrow as pa

    feats, out = features(schema), []
    for name in schema.names:
        t = schema.field(name).type
        if name in (image, SPLIT) or name.startswith("__"):  # pandas' __index_level_0__
            continue
        if feats.get(name, {}).get("_type") == "ClassLabel" or pa.types.is_integer(t) or pa.types.is_string(t):
            out.append(name)
    return out


def class_names(schema, column: str) -> list[str] | None:
    """A ClassLabel column's names (index -> name), None if the column is not one."""
    f = features(schema).get(column, {})
    return list(f["names"]) if f.get("_type") == "ClassLabel" and f.get("names") else None


def open_file(filesystem, path: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(filesystem.open_input_file(path))


def row_group_starts(pf) -> list[int]:
    """The first row of each row group, and the file's row count last."""
    starts = [0]
    for g in range(pf.metadata.num_row_groups):
        starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
    return starts


def read_rows(filesystem, path: str, rows: Sequence[int]) -> list[bytes | None]:
    """The encoded image of each of `rows` (0-based in the file), reading each row group they touch once."""
    pf = open_file(filesystem, path)
    column = image_column(pf.schema_arrow)
    if column is None:
        raise ValueError(f"no image column (a struct with a 'bytes' field, or binary) in {pf.schema_arrow.names}")
    import pyarrow as pa

    starts = row_group_starts(pf)
    out: dict[int, bytes | None] = {}
    for g in sorted({bisect.bisect_right(starts, r) - 1 for r in rows}):
        cells = pf.read_row_group(g, columns=[column]).column(0).combine_chunks()  # one chunk: no copy
        if hasattr(cells, "field"):  # struct<bytes, path>
            cells = cells.field("bytes")
        lo, hi = starts[g], starts[g + 1]
        for r in (r for r in rows if lo <= r < hi):
            out[r] = cells[r - lo].as_py()  # the one copy: Arrow's buffer -> the bytes Pillow decodes
        del cells
        pa.default_memory_pool().release_unused()  # a row group is ~40 MB: give it back before the next
    return [out.get(r) for r in rows]
