"""`lift-search export`: every clip of an index as one Parquet row, for pandas, polars, DuckDB, ...

Columns: clip_id (int64), video_path (string), start_s, end_s (float64), descriptor (list<float32>: the
stored [m | dyn], exactly the vector searches score), and with `latents=True` z_s and z_d (list<float32>:
LiFT's raw static and dynamic latents, computed again from the cached features, which costs a LiFT pass
per clip). Rows are written in clip id order, a batch at a time (memory stays flat at any library size),
to a temp file renamed into place when complete. A file name that is not valid UTF-8 (Parquet strings
must be) is written with its odd bytes as \\xNN escapes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import select

from db import Clip, Video
from lift.files import atomic_write, shown_path

from .engine import SearchEngine

BATCH = 65_536  # clips per Parquet row group


def export_parquet(engine: SearchEngine, out: str | Path, latents: bool = False, batch: int = BATCH) -> int:
    """Write the served clips of `engine`'s index to the Parquet file `out`; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    floats = pa.list_(pa.float32())
    fields = [("clip_id", pa.int64()), ("video_path", pa.string()), ("start_s", pa.float64()),
              ("end_s", pa.float64()), ("descriptor", floats)]
    if latents:
        fields += [("z_s", floats), ("z_d", floats)]
    schema = pa.schema(fields)
    rows = (select(Clip.id, Video.path, Clip.start_s, Clip.end_s, Clip.video_id, Clip.ordinal, Video.features)
            .join(Video, Clip.video_id == Video.id).order_by(Clip.id))
    hidden, n = engine.hidden_ids, 0
    with atomic_write(out) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer, engine.sessions() as s:
        result = s.execute(rows).yield_per(batch)
        for part in result.partitions(batch):
            ids = np.fromiter((r.id for r in part), np.int64, len(part))
            found, desc = engine.store.lookup(ids)  # (rows an indexer added since the engine opened: not yet)
            found &= ~np.isin(ids, list(hidden))
            part, ids, desc = [r for r, ok in zip(part, found) if ok], ids[found], desc[found]
            if not part:
                continue
            cols = {"clip_id": ids, "video_path": [shown_path(r.path) for r in part],
                    "start_s": [r.start_s for r in part], "end_s": [r.end_s for r in part],
                    "descriptor": _lists(desc)}
            if latents:
                z_s, z_d = _latents(engine, part)
                cols.update(z_s=_lists(z_s), z_d=_lists(z_d))
            writer.write_table(pa.table(cols, schema=schema))
            n += len(part)
    return n


def _lists(matrix: np.ndarray):
    """(n, d) float32 -> a pyarrow list<float32> array without a Python object per value."""
    import pyarrow as pa

    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, np.float32).reshape(-1)))


def _latents(engine: SearchEngine, rows) -> tuple[np.ndarray, np.ndarray]:
    """LiFT's (z_s, z_d) of these clips, from the cached features of their videos (one file read per video)."""
    import torch

    from indexer.library import VideoFeatures

    seqs, cache = [], {}
    for r in rows:
        if r.features not in cache:
            cache = {r.features: VideoFeatures.load(engine.idx.root / r.features).clip_sequences()}
        seqs.append(cache[r.features][r.ordinal])
    model = engine.model
    out_s, out_d = [], []
    with torch.no_grad():
        for i in range(0, len(seqs), 256):
            x = torch.as_tensor(np.stack(seqs[i:i + 256]), device=model.feature_mean.device)
            z_s, z_d = model.encode(x)
            out_s.append(z_s.cpu().numpy())
            out_d.append(z_d.cpu().numpy())
    return np.concatenate(out_s).astype(np.float32), np.concatenate(out_d).astype(np.float32)
