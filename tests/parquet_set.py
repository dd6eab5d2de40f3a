"""A folder of class folders rewritten as Parquet shards in the Hugging Face `datasets` layout (how WikiArt is
published): an `image` struct<bytes, path> column, ClassLabel columns `style` (the folder's class) and `period` (a
coarser label derived from it, PERIOD), their names in the schema's b"huggingface" metadata, rows shuffled across
classes, small row groups. The same encoded bytes as the folder: a cache built from either holds the same pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# the built-in styles by period: a second label column whose classes are unions of the first's
PERIOD = {
    "impressionism": "nineteenth_century",
    "realism": "nineteenth_century",
    "pointillism": "nineteenth_century",
    "cubism": "early_modern",
    "color_field": "post_war",
    "pop_art": "post_war",
    "minimalism": "post_war",
    "ukiyo_e": "edo",
}
PERIODS = ["edo", "nineteenth_century", "early_modern", "post_war"]  # ClassLabel order: not alphabetical


def features(styles: list[str]) -> bytes:
    return json.dumps(
        {
            "info": {
                "features": {
                    "image": {"_type": "Image"},
                    "style": {"names": styles, "_type": "ClassLabel"},
                    "period": {"names": PERIODS, "_type": "ClassLabel"},
                }
            }
        }
    ).encode()


def write_shards(
    folder: Path, out: Path, shards: int = 3, row_group: int = 40, seed: int = 0, corrupt: int = 0
) -> list[Path]:
    """folder/<style>/<image> -> out/train-0000k-of-0000n.parquet; returns the shard paths. `corrupt`: that many
    rows at the start of the first shard hold bytes that are no image (as a damaged upload would)."""
    styles = sorted(p.name for p in folder.iterdir() if p.is_dir())
    files = [(f, s) for s in styles for f in sorted((folder / s).iterdir()) if f.is_file()]
    order = np.random.default_rng(seed).permutation(len(files))
    out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("style", pa.int64()),
            ("period", pa.int64()),
        ],
        metadata={b"huggingface": features(styles)},
    )
    paths = []
    for k, part in enumerate(np.array_split(order, shards)):
        rows = [files[i] for i in part]
        table = pa.table(
            {
                "image": [
                    {"bytes": b"<html>404</html>" if k == 0 and j < corrupt else f.read_bytes(), "path": f.name}
                    for j, (f, _) in enumerate(rows)
                ],
                "style": [styles.index(s) for _, s in rows],
                "period": [PERIODS.index(PERIOD[s]) for _, s in rows],
            },
            schema=schema,
        )
        paths.append(out / f"train-{k:05d}-of-{shards:05d}.parquet")
        pq.write_table(table, paths[-1], row_group_size=row_group)
    return paths
