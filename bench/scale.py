"""Vector search at scale: build (or reuse) a real index folder of N clips and measure it.

    python bench/scale.py --clips 100000 --index /tmp/scale-100k
    python bench/scale.py --clips 1000000 --index DIR            # ~30-60 min on a shared 2-core machine
    python bench/scale.py --clips 10000000 --index DIR           # ~1.5-3 h; ~20 GB of disk

The index is the format `lift-search index` writes (index.db, vectors/, models/, features/), so
`SearchEngine.open`, `lift-search status`, `export` and `ui` open it. Its descriptors come from the
project's own LiFT applied to realistic feature sequences, not i.i.d. vectors:

1. a *base* library (once, reused; `--base`): synthetic chiral videos of 2-12 s (indexer.synth: 10
   actions and their reversals, 6 scenes, 2 variants), indexed by `run_index` with efficientnet-lite0 and
   a LiFT fitted on it (d = 192: 384-d descriptors; 20 epochs on 300 of its ~700 clips, which is enough for
   LiFT's kind of descriptors and keeps this step under half an hour), which caches every video's
   per-frame features;
2. each bench *video* is a feature track made of 1-5 base videos' frame features, each played forwards or
   backwards, time-stretched (x0.6-1.6), half the time blended with another base video (a mixed scene),
   plus feature noise; it is cut into 16-frame windows every 8 frames (4 s windows every 2 s, as the
   indexer cuts long videos, so neighbouring windows share half their frames), and the LiFT describes
   every window;
3. past `--describe-max` clips (default 1M: LiFT on a CPU is the slow part), further videos are made at
   the descriptor level: a described video's windows moved together to a new scene (its static and
   dynamic halves each nudged by one random direction per video, plus per-clip noise, half the time
   mixed with another video's appearance), both halves renormalised.

Bench videos are not files: their paths lie under INDEX/library (empty), so the app shows a clip's
thumbnail instead of playing it, and a clip's cached features (Explain) are those of the base video its
track starts with. Rows go into the database in bulk; vectors through indexer.store.VectorStore exactly as
an index run stores them (segments, merges, the IVF index once past StoreConfig.exact_max).

Measured (JSON to bench/results/scale-<N>.json, a table on stdout):
* build time (by stage), disk use, the store's layout;
* one checkpoint of 1,000 new clips at size N through indexer.pipeline.write_checkpoint (database first,
  then one segment), its seconds and bytes written, then the upkeep (`maintain`) and the removal;
* in a fresh process (`--threads`, default 2): SearchEngine.open (plus building the IVF index in memory),
  then `--queries` single queries per mode (forward, reverse, motion 0.25/0.5/0.75 via search_clip, k=10),
  latency p50/p99 (wall, and the CPU time of the process: a shared machine adds waits for a core to the
  wall time), the process's peak RSS; each mode's recall@10 against exact brute force over the same
  stored vectors (a hit counts when its exact score reaches the exact 10th best, so ties do not count
  against it), and the share of identical top-10 ids;
* `status`, a deep Library page and a filtered count, as the app runs them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench.scale")

MODES = {"forward": (False, 0.5), "reverse": (True, 0.5), "motion 0.25": (False, 0.25),
         "motion 0.5": (False, 0.5), "motion 0.75": (False, 0.75)}
OVERLAPS = ("keep", "distinct")  # every window as a hit; one hit per moment of a video (the default)
WINDOW, STRIDE = 16, 8        # frames per clip, frames between clip starts (4 s windows every 2 s at 4 fps)
FOLDERS = 100                 # bench videos are spread over this many folders
CHUNK_CLIPS = 262_144         # clips generated (and stored) per step of the build
BASE_EPOCHS, BASE_CLIPS = 20, 300  # the base LiFT's training: the bench needs LiFT's kind of descriptors, not its best
BASE_DEFAULT = Path(os.environ.get("TMPDIR", "/tmp")) / "lift-scale-base"
VIDEO_ROW = ("INSERT INTO videos (id, path, root, size, mtime, content_hash, n_frames, fps, width, height, features, "
             "indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
CLIP_ROW = "INSERT INTO clips (id, video_id, ordinal, start_s, end_s, frame_indices) VALUES (?, ?, ?, ?, ?, ?)"


# ---- 1. the base library ---------------------------------------------------------------------------
@dataclass
class Base:
    index: Path
    tracks: list          # per base video: (features file relative to its index, frame features (n, D))
    settings: dict


def ensure_base(folder: Path) -> Base:
    """Render and index the base library once (reused when FOLDER/index holds it)."""
    from db import all_settings, open_db
    from indexer.library import IndexDir, VideoFeatures
    from indexer.pipeline import run_index
    from indexer.synth import render_library
    from lift.config import IndexOptions, TrainConfig

    index = folder / "index"
    if not (index / "vectors" / "manifest.json").is_file():  # (a killed run resumes from its cached features)
        log.info("rendering and indexing the base library in %s (once)", folder)
        if not (folder / "videos" / "labels.csv").is_file():
            render_library(folder / "videos", n_scenes_per_group=6, variants=2, seed=7, duration=(2.0, 12.0),
                           progress=False)
        # the recipe the figures in docs/benchmarks.md were measured with (the default before issue 18): pooled
        # 1,280-d features and a learned motion half; the descriptors are 384-d either way
        train = TrainConfig(epochs=BASE_EPOCHS, max_clips=BASE_CLIPS, progress=False, motion_pin=0.0)
        run_index([folder / "videos"], index, IndexOptions(backbone="efficientnet-lite0", pooling="global", lift="fit",
                                                           train=train, progress=False))
    idx = IndexDir(index)
    sessions = open_db(idx.db)
    with sessions() as s:
        settings = all_settings(s)
    from sqlalchemy import select

    from db import Video

    with sessions() as s:
        files = sorted(set(s.scalars(select(Video.features))))
    tracks = [(f, VideoFeatures.load(idx.root / f).feats.astype(np.float32)) for f in files]
    return Base(index, tracks, settings)


# ---- 2. generated videos ------------------------------------------------------------------------------
def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """(m, D) -> (n, D), linear interpolation in time."""
    t = np.linspace(0, len(x) - 1, n)
    lo = np.floor(t).astype(int)
    hi = np.minimum(lo + 1, len(x) - 1)
    w = (t - lo)[:, None].astype(np.float32)
    return (1 - w) * x[lo] + w * x[hi]


class Tracks:
    """Feature tracks of bench videos, from the base library's cached frame features."""

    def __init__(self, base: Base):
        self.feats = [f for _, f in base.tracks]
        self.files = [name for name, _ in base.tracks]
        self.std = np.concatenate(self.feats).std(0).astype(np.float32)

    def video(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """(the base video it starts with, its frame features (L, D), L >= WINDOW)."""
        parts, first = [], None
        for _ in range(int(rng.integers(1, 6))):
            i = int(rng.integers(len(self.feats)))
            first = i if first is None else first
            x = self.feats[i][::-1] if rng.random() < 0.5 else self.feats[i]
            x = _resample(x, max(4, round(len(x) * rng.uniform(0.6, 1.6))))
            if rng.random() < 0.5:  # a mixed scene
                y = self.feats[int(rng.integers(len(self.feats)))]
                x = (1 - (lam := rng.uniform(0.1, 0.5))) * x + lam * _resample(y, len(x))
            parts.append(x)
        track = np.concatenate(parts)
        track = track + (0.05 * rng.standard_normal(track.shape)).astype(np.float32) * self.std
        return first, track if len(track) >= WINDOW else _resample(track, WINDOW)


def windows(track: np.ndarray) -> np.ndarray:
    starts = np.arange(0, len(track) - WINDOW + 1, STRIDE)
    return np.stack([track[s:s + WINDOW] for s in starts])  # (c, WINDOW, D)


def perturb(desc: np.ndarray, rng: np.random.Generator, other: np.ndarray) -> np.ndarray:
    """A described video's windows (c, 2d) moved together to a new scene (see the module docstring)."""
    h = desc.shape[1] // 2
    out = desc.copy()
    for lo, hi, scale in ((0, h, rng.uniform(0.3, 0.7)), (h, 2 * h, rng.uniform(0.2, 0.5))):
        shift = rng.standard_normal(hi - lo).astype(np.float32) * (scale / np.sqrt(hi - lo))
        noise = rng.standard_normal((len(desc), hi - lo)).astype(np.float32) * (0.08 / np.sqrt(hi - lo))
        out[:, lo:hi] += shift + noise
    if rng.random() < 0.5:  # another video's appearance mixed in
        out[:, :h] += rng.uniform(0.2, 0.5) * other[:h]
    out[:, :h] /= np.linalg.norm(out[:, :h], axis=1, keepdims=True)
    out[:, h:] /= np.linalg.norm(out[:, h:], axis=1, keepdims=True)
    return out


# ---- 3. building the index -----------------------------------------------------------------------------
def _new_index(index: Path, base: Base):
    """An empty index folder with the base library's settings, LiFT and feature files."""
    from db import open_db, set_setting
    from indexer.library import IndexDir

    idx = IndexDir(index)
    idx.root.mkdir(parents=True)
    (idx.root / "library").mkdir()
    model_hash = base.settings["lift"]["hash"]
    idx.models.mkdir()
    shutil.copy2(IndexDir(base.index).model_path(model_hash), idx.model_path(model_hash))
    shutil.copytree(IndexDir(base.index).features, idx.features)
    sessions = open_db(idx.db, write=True)
    with sessions.begin() as s:
        for key in ("backbone", "backbone_record", "sampling", "lift", "dim", "created_at"):
            set_setting(s, key, base.settings[key])
        set_setting(s, "roots", [str(idx.root / "library")])
    sessions.kw["bind"].dispose()


def _pool(idx, store, rng: np.random.Generator, videos: int = 20_000) -> list[np.ndarray]:
    """Described videos of an index (their windows' descriptors), the material of descriptor-level ones."""
    from sqlalchemy import func, select

    from db import Clip, open_db

    sessions = open_db(idx.db)
    with sessions() as s:
        top = s.scalar(select(func.max(Clip.video_id)))
        picked = sorted(set(rng.integers(1, top + 1, size=videos).tolist()))
        rows = s.execute(select(Clip.video_id, Clip.id).where(Clip.video_id.in_(picked[:30_000]))
                         .order_by(Clip.video_id, Clip.id)).all()
    sessions.kw["bind"].dispose()
    vid = np.array([r[0] for r in rows])
    vecs = store.vectors([r[1] for r in rows])
    cuts = np.flatnonzero(np.diff(vid)) + 1
    return np.split(vecs, cuts)


def build(index: Path, n: int, base: Base, describe_max: int, seed: int, grow_from: Path | None = None,
          resume: bool = False) -> dict:
    """Write an index of `n` clips to `index` (which must not exist), or copy the smaller bench index
    `grow_from` there and add clips up to `n`, or (`resume`) add clips to the unfinished build at `index`
    (a killed build loses the step it was in: each step commits its rows and vectors). Returns the seconds
    per stage."""
    import torch
    from sqlalchemy import func, select

    from db import Clip, Video, open_db, set_setting
    from indexer.library import IndexDir
    from indexer.pipeline import describe
    from indexer.segments import MANIFEST
    from indexer.store import VectorStore
    from lift.checkpoint import load_checkpoint

    torch.set_num_threads(2)
    stages = {"copy": 0.0, "generate + describe (LiFT)": 0.0, "generate (descriptor level)": 0.0,
              "database": 0.0, "vectors (segments)": 0.0}
    t0 = time.perf_counter()
    if resume:
        pass
    elif grow_from is not None:
        shutil.copytree(grow_from, index)
    else:
        _new_index(index, base)
    stages["copy"] = time.perf_counter() - t0
    idx = IndexDir(index)
    model_hash = base.settings["lift"]["hash"]
    model = load_checkpoint(idx.model_path(model_hash)).eval()
    sessions = open_db(idx.db, write=True)
    with sessions() as s:
        done = s.scalar(select(func.count(Clip.id)))
        video_id = s.scalar(select(func.max(Video.id))) or 0
    store = (VectorStore.open(idx.vectors, base.settings["dim"], writable=True) if (idx.vectors / MANIFEST).exists()
             else VectorStore(idx.vectors, base.settings["dim"], meta={"lift_hash": model_hash}))
    if len(store) != done:  # (a build killed between the two commits of a step)
        raise SystemExit(f"{index}: {done} clips in the database but {len(store)} vectors: delete it and build again")
    store.mode = "flat"  # no IVF index while it grows (it is trained once, at the end)
    store.maintain()
    tracks, rng = Tracks(base), np.random.default_rng(seed + done)
    pool = _pool(idx, store, rng) if done else []
    now = time.strftime("%Y-%m-%d %H:%M:%S.000000")
    while done < n:
        t0 = time.perf_counter()
        lift_stage = done < describe_max
        chunk = _Chunk(idx, tracks.files, done, video_id, min(CHUNK_CLIPS, n - done, describe_max - done if lift_stage
                                                              else n), now)
        batch: list[tuple[int, np.ndarray]] = []  # (first base video, windows) waiting for the LiFT
        while not chunk.full:
            if lift_stage:
                first, track = tracks.video(rng)
                batch.append((first, windows(track)))
                if sum(len(w) for _, w in batch) < min(2048, chunk.room):
                    continue
                for first, vec in _describe(model, batch, describe):
                    chunk.add(first, vec)
                    if len(pool) < 20_000:
                        pool.append(vec)
                batch = []
            else:
                src, other = pool[int(rng.integers(len(pool)))], pool[int(rng.integers(len(pool)))]
                chunk.add(int(rng.integers(len(tracks.files))), perturb(src, rng, other[0]))
        vectors = np.concatenate(chunk.vectors)
        stages["generate + describe (LiFT)" if lift_stage else "generate (descriptor level)"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        with sessions.begin() as s:  # database first, then the vectors, as an index run does
            cur = s.connection().connection.dbapi_connection.cursor()  # rows as the schema (db/schema.py) has them,
            cur.executemany(VIDEO_ROW, chunk.videos)                      # without an ORM object each
            cur.executemany(CLIP_ROW, chunk.clips)
            set_setting(s, "next_clip_id", done + len(vectors) + 1)
        stages["database"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        store.add(np.array([c[0] for c in chunk.clips], np.int64), vectors)
        store.commit()
        stages["vectors (segments)"] += time.perf_counter() - t0
        done, video_id = done + len(vectors), chunk.video_id
        log.info("built %d / %d clips (%d videos)", done, n, video_id)
    t0 = time.perf_counter()
    store.mode = "auto"
    upkeep = store.maintain()
    stages["vectors: merges + IVF training"] = time.perf_counter() - t0
    with sessions.begin() as s:
        set_setting(s, "updated_at", time.strftime("%Y-%m-%d %H:%M:%S"))
    sessions.kw["bind"].dispose()
    return {"stages_s": {k: round(v, 1) for k, v in stages.items()}, "upkeep": upkeep, "videos": video_id}


class _Chunk:
    """The rows of one build step: videos, clips (as the schema has them) and their vectors."""

    def __init__(self, idx, files: list[str], done: int, video_id: int, size: int, now: str):
        self.idx, self.files, self.next_clip, self.video_id, self.size, self.now = idx, files, done + 1, video_id, size, now
        self.videos, self.clips, self.vectors, self.count = [], [], [], 0

    @property
    def room(self) -> int:
        return self.size - self.count

    @property
    def full(self) -> bool:
        return self.count >= self.size

    def add(self, first: int, vec: np.ndarray) -> None:
        """A video whose track starts with base video `first`, and its windows' descriptors (cut to fit)."""
        vec = vec[: self.room]
        if not len(vec):
            return
        self.video_id += 1
        v, lib = self.video_id, self.idx.root / "library"
        self.videos.append((v, str(lib / f"{v % FOLDERS:03d}" / f"v{v:08d}.mp4"), str(lib), 0, 0.0,
                            Path(self.files[first]).stem, (len(vec) + 1) * STRIDE, 4.0, 160, 120, self.files[first],
                            self.now))
        self.clips += [(self.next_clip + j, v, 0, 2.0 * j, 2.0 * j + 4.0,
                        json.dumps(list(range(STRIDE * j, STRIDE * j + WINDOW)))) for j in range(len(vec))]
        self.vectors.append(vec)
        self.next_clip += len(vec)
        self.count += len(vec)


def _describe(model, batch: list, describe) -> list[tuple[int, np.ndarray]]:
    """The LiFT descriptors of several videos' windows, in one call: [(first base video, (c, 2d))]."""
    import torch

    with torch.inference_mode():
        vecs = describe(model, np.concatenate([w for _, w in batch]), batch=1024)
    cuts = np.cumsum([len(w) for _, w in batch])[:-1]
    return [(first, v) for (first, _), v in zip(batch, np.split(vecs, cuts))]


def retrain(index: Path, dim: int) -> float:
    """Drop the store's IVF index and train it again with the current StoreConfig; returns the seconds."""
    from indexer.library import IndexDir
    from indexer.store import VectorStore

    t0 = time.perf_counter()
    store = VectorStore.open(IndexDir(index).vectors, dim, writable=True)
    mode, store.mode = store.mode, "flat"
    store.maintain()
    store.mode = mode
    log.info("retrained: %s", store.maintain())
    return round(time.perf_counter() - t0, 1)


# ---- 4. measurements ---------------------------------------------------------------------------------------
def _written_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("write_bytes")).split()[1])


def disk_use(index: Path) -> dict:
    out = {}
    for part in ("index.db", "vectors", "models", "features"):
        p = index / part
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()] if p.exists() else []
        out[part] = sum(f.stat().st_size for f in files)
    out["total"] = sum(out.values())
    return out


def measure_checkpoint(index: Path, base: Base, clips: int = 1000, repeats: int = 3) -> list[dict]:
    """One checkpoint of `clips` new clips (100 videos), as `write_checkpoint` stores them, then the
    store's upkeep, then their removal (vectors first, then rows); `repeats` times."""
    from db import delete_videos, open_db
    from indexer.clips import ClipPlan, VideoInfo
    from indexer.library import IndexDir, VideoFeatures
    from indexer.pipeline import Pending, write_checkpoint
    from indexer.scan import ScannedFile
    from indexer.store import VectorStore

    idx = IndexDir(index)
    dim = base.settings["dim"]
    rng = np.random.default_rng(1)
    per_video = clips // 100
    out = []
    for r in range(repeats):
        sessions = open_db(idx.db, write=True)
        store = VectorStore.open(idx.vectors, dim, writable=True)
        items = []
        for v in range(100):
            name = base.tracks[int(rng.integers(len(base.tracks)))][0]
            path = str(idx.root / "library" / "checkpoint" / f"r{r}v{v:03d}.mp4")
            plans = [ClipPlan(2.0 * j, 2.0 * j + 4.0, tuple(range(8 * j, 8 * j + 16))) for j in range(per_video)]
            items.append((Pending(ScannedFile(path, str(idx.root / "library"), 0, 0.0), Path(name).stem),
                          VideoFeatures(VideoInfo(8 * per_video + 8, 4.0, 160, 120), plans, np.zeros(0),
                                        np.zeros((0, 1)), np.zeros((0, 1, 1, 3), np.uint8))))
        vectors = rng.standard_normal((100 * per_video, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) / np.sqrt(2)
        before, disk0, t0 = _written_bytes(), disk_use(index)["total"], time.perf_counter()
        ids = write_checkpoint(sessions, idx, store, items, vectors)
        add_s, add_bytes = time.perf_counter() - t0, _written_bytes() - before
        t0, before = time.perf_counter(), _written_bytes()
        upkeep = store.maintain()
        upkeep_s, upkeep_bytes = time.perf_counter() - t0, _written_bytes() - before
        t0, before = time.perf_counter(), _written_bytes()
        store.remove(ids)
        store.commit()
        with sessions.begin() as s:
            from sqlalchemy import select

            from db import Video
            delete_videos(s, list(s.scalars(select(Video.id).where(Video.path.like("%/checkpoint/%")))))
        remove_s, remove_bytes = time.perf_counter() - t0, _written_bytes() - before
        out.append({"clips": len(ids), "add_s": round(add_s, 3), "add_bytes": add_bytes,
                    "disk_growth_bytes": disk_use(index)["total"] - disk0,
                    "upkeep_s": round(upkeep_s, 3), "upkeep_bytes": upkeep_bytes, "upkeep": upkeep,
                    "remove_s": round(remove_s, 3), "remove_bytes": remove_bytes})
        sessions.kw["bind"].dispose()
        log.info("checkpoint %d: %s", r, out[-1])
    return out


def query_ids(index: Path, n: int, seed: int) -> list[int]:
    from db import open_db
    from indexer.library import IndexDir
    from indexer.store import VectorStore

    idx = IndexDir(index)
    sessions = open_db(idx.db)
    from db import get_setting

    with sessions() as s:
        dim = get_setting(s, "dim")
    ids = VectorStore.open(idx.vectors, dim).ids()
    return sorted(np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False).tolist())


def read_files(index: Path) -> dict:
    """Read the index's vectors and database files once, into the OS page cache, as a search server that has
    been answering for a while has them (read(), not mapped: nothing of them joins the process's memory)."""
    t0, total, buf = time.perf_counter(), 0, bytearray(1 << 24)
    for path in sorted((index / "vectors").glob("*.arr")) + [index / "index.db"]:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return {"bytes": total, "seconds": round(time.perf_counter() - t0, 2)}


def search_worker(index: Path, ids: list[int], warm: list[int], threads: int, cold: bool = False) -> dict:
    """In a fresh process: open the engine, read the index's files into the page cache (unless `cold`), run the
    `warm` queries (other clips than `ids`), then every query of every mode; report latencies and RSS."""
    import faiss

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    from search import SearchEngine

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = SearchEngine.open(index)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.store.load_ann()
    t_ann = time.perf_counter() - t0
    cached = None if cold else read_files(index)
    t0 = time.perf_counter()
    for cid in warm:  # (the first queries pay for lazy imports)
        engine.search_clip(cid, k=10)
    t_warm = time.perf_counter() - t0
    out = {"import_s": round(t_import, 3), "open_s": round(t_open, 3), "load_ann_s": round(t_ann, 3),
           "warm_up": {"queries": len(warm), "seconds": round(t_warm, 3), "files_read": cached},
           "rss_after_open_mb": _rss()["VmRSS"], "load_avg_before": os.getloadavg(), "modes": {}}
    for mode, (reverse, motion) in MODES.items():
        for overlap in OVERLAPS:
            lat, cpu, results = [], [], []
            for cid in ids:
                t0, c0 = time.perf_counter(), time.process_time()
                hits = engine.search_clip(cid, k=10, reverse=reverse, motion=motion, overlap=overlap)
                lat.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                results.append([(h.clip_id, h.score) for h in hits])
            lat_ms, cpu_ms = np.array(lat) * 1000, np.array(cpu) * 1000
            # wall time, and the CPU time the process spent (all its threads, user + system): on a shared
            # machine the wall time also holds the waits for a core, which the CPU time leaves out
            out["modes"][f"{mode}, {overlap}"] = {"p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
                                                  "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
                                                  "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 3),
                                                  "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 3),
                                                  "results": results}
    out["load_avg_after"] = os.getloadavg()
    t0 = time.perf_counter()
    status = engine.status()
    out["status_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    total = engine.count()
    out["count_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    engine.clip_page(max(0, total - 48), 24, order="path")  # the app's Library: its last page
    out["last_page_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    engine.clip_page(max(0, total - 100), 100)  # the HTTP API's GET /clips (by id): its last page
    out["api_last_page_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    engine.count(folder=engine.folders()[1], text="v0")
    out["folders_and_filtered_count_s"] = round(time.perf_counter() - t0, 3)
    out["search"] = status["search"]
    out["rss_mb"] = _rss()
    return out


def _rss() -> dict:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}


def ground_truth(index: Path, ids: list[int], k: int = 10, deep: int = 200) -> dict:
    """Exact top-k per mode and overlap setting: brute force over the stored vectors (every query of a mode
    in one pass), the query clip excluded; "distinct" keeps the best window of each overlapping group
    among the exact top `deep` (search.engine.distinct_moments, as the engine does)."""
    from sqlalchemy import select

    from db import Clip, Video, get_setting, open_db
    from indexer.library import IndexDir
    from indexer.store import VectorStore
    from search.engine import Clip as ClipInfo
    from search.engine import Hit, distinct_moments

    idx = IndexDir(index)
    sessions = open_db(idx.db)
    with sessions() as s:
        dim = get_setting(s, "dim")
    store = VectorStore.open(idx.vectors, dim)
    vecs, h = store.vectors(ids), dim // 2
    out = {}
    for mode, (reverse, motion) in MODES.items():
        q = np.concatenate([(1 - motion) * vecs[:, :h], motion * (-vecs[:, h:] if reverse else vecs[:, h:])], 1)
        scores, got = store.search(q, deep + 1, exact=True)
        keep = got != np.array(ids)[:, None]
        out[f"{mode}, keep"] = [(g[m][:k].tolist(), s[m][:k].tolist()) for g, s, m in zip(got, scores, keep)]
        with sessions() as s:
            rows = {r.id: r for r in s.execute(select(Clip.id, Video.path, Clip.start_s, Clip.end_s)
                                               .join(Video).where(Clip.id.in_(np.unique(np.append(got, ids)).tolist())))}
        distinct = []
        for cid, g, sc, m in zip(ids, got, scores, keep):
            query = ClipInfo(cid, rows[cid].path, rows[cid].start_s, rows[cid].end_s)
            hits = distinct_moments([Hit(int(i), rows[i].path, rows[i].start_s, rows[i].end_s, float(x))
                                     for i, x in zip(g[m], sc[m]) if i >= 0], query)[:k]
            distinct.append(([x.clip_id for x in hits], [x.score for x in hits]))
        out[f"{mode}, distinct"] = distinct
    sessions.kw["bind"].dispose()
    return out


def recall(results: list, truth: list) -> tuple[float, float]:
    """(tie-aware recall@10: a returned clip counts when its exact score reaches the exact 10th best; the
    share of the exact top-10 ids returned)."""
    tie, same = [], []
    for got, (ids, scores) in zip(results, truth):
        kth = scores[-1] - 1e-5
        tie.append(sum(1 for _, s in got if s >= kth) / len(ids))
        same.append(len({c for c, _ in got} & set(ids)) / len(ids))
    return float(np.mean(tie)), float(np.mean(same))


# ---- main ------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, required=True, help="clips in the index")
    ap.add_argument("--index", type=Path, required=True, help="the index folder (built if missing, else reused)")
    ap.add_argument("--base", type=Path, default=BASE_DEFAULT, help="the base library (default %(default)s)")
    ap.add_argument("--describe-max", type=int, default=1_000_000,
                    help="clips described by the LiFT; the rest at the descriptor level (default %(default)s)")
    ap.add_argument("--queries", type=int, default=200, help="queries per mode (default %(default)s)")
    ap.add_argument("--warm-up", type=int, default=200, help="queries (of other clips) before the measured "
                                                              "ones (default %(default)s)")
    ap.add_argument("--cold", action="store_true", help="do not read the index's files into the page cache "
                                                         "before the queries (a server's first minutes)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the search process (default %(default)s)")
    ap.add_argument("--checkpoints", type=int, default=3, help="checkpoints of 1k clips to time")
    ap.add_argument("--grow-from", type=Path, help="start from a copy of this smaller bench index (e.g. the 1M one "
                                                  "for 10M: its clips, then descriptor-level ones)")
    ap.add_argument("--retrain", action="store_true", help="train the index's IVF index again (after a change of "
                                                            "lift.config.StoreConfig), then measure")
    ap.add_argument("--build-only", action="store_true", help="build the index, measure nothing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="JSON (default bench/results/scale-<N>.json)")
    ap.add_argument("--search-worker", help=argparse.SUPPRESS)  # internal: the search process
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.search_worker:
        print(json.dumps(search_worker(a.index, *json.loads(a.search_worker), a.threads, a.cold)))
        return 0
    t_start = time.perf_counter()
    base = ensure_base(a.base)
    result = {"clips": a.clips, "index": str(a.index), "machine": {"cpus": os.cpu_count(),
              "platform": platform.platform(), "python": platform.python_version(),
              "load_avg_at_start": os.getloadavg()}, "date": time.strftime("%Y-%m-%d %H:%M")}
    built = _clips_in(a.index)
    if built is None or built < a.clips:
        if built is not None:
            log.info("resuming the unfinished build at %s (%d clips)", a.index, built)
        t0 = time.perf_counter()
        result["build"] = build(a.index, a.clips, base, a.describe_max, a.seed, a.grow_from, resume=built is not None)
        result["build"]["seconds"] = round(time.perf_counter() - t0, 1)
    else:
        log.info("reusing the index at %s", a.index)
    if a.retrain:
        result["retrain_s"] = retrain(a.index, base.settings["dim"])
    out = a.out or REPO / "bench" / "results" / f"scale-{a.clips}.json"
    if a.build_only:  # the build's figures are kept: a later run reuses the index and measures it
        if "build" in result:
            result["peak_rss_builder_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            result["disk_bytes"] = disk_use(a.index)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".build.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0
    result["checkpoint_1k"] = measure_checkpoint(a.index, base, repeats=a.checkpoints)
    ids = query_ids(a.index, a.queries, a.seed + 1)
    warm = sorted(set(query_ids(a.index, a.warm_up + len(ids), a.seed + 2)) - set(ids))[:a.warm_up]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "OPENBLAS_NUM_THREADS": str(a.threads),
           "MKL_NUM_THREADS": str(a.threads), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, __file__, "--clips", str(a.clips), "--index", str(a.index),
                           "--threads", str(a.threads), "--search-worker", json.dumps([ids, warm])] + ["--cold"] * a.cold,
                          capture_output=True, text=True, env=env, check=True)
    search = json.loads(proc.stdout.strip().splitlines()[-1])
    t0 = time.perf_counter()
    truth = ground_truth(a.index, ids)
    result["ground_truth_s"] = round(time.perf_counter() - t0, 1)
    for mode, m in search["modes"].items():
        m["recall_at_10"], m["same_ids_at_10"] = (round(x, 4) for x in recall(m.pop("results"), truth[mode]))
    result["search"] = search
    result["disk_bytes"] = disk_use(a.index)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["peak_rss_builder_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {out}")
    return 0


def _clips_in(index: Path) -> int | None:
    """Clips in the bench index at `index` (None: no index there)."""
    import sqlite3
    from contextlib import closing

    if not (index / "index.db").exists():
        return None
    with closing(sqlite3.connect(index / "index.db")) as c:
        return c.execute("SELECT count(*) FROM clips").fetchone()[0]


def table(r: dict) -> str:
    s = r["search"]
    cp = r["checkpoint_1k"]
    lines = [f"{r['clips']:,} clips: {s['search'].get('index', 'exact')} ({s['search']['segments']} segments); "
             f"disk {r['disk_bytes']['total'] / 1e9:.2f} GB",
             f"open {s['open_s']:.2f} s + IVF in memory {s['load_ann_s']:.2f} s; RSS peak {s['rss_mb']['VmHWM']:.0f} MB "
             f"(anon {s['rss_mb']['RssAnon']:.0f}, file {s['rss_mb']['RssFile']:.0f})",
             f"checkpoint of 1k clips: {statistics.median(c['add_s'] for c in cp):.2f} s, "
             f"{statistics.median(c['add_bytes'] for c in cp) / 1e6:.1f} MB written (median of {len(cp)})",
             f"load average {s['load_avg_before'][0]:.1f} before the queries, {s['load_avg_after'][0]:.1f} after",
             "page cache: " + (f"the index's {w['bytes'] / 1e9:.2f} GB of files read once before the queries "
                               f"({w['seconds']:.1f} s)" if (w := s.get("warm_up", {}).get("files_read")) else "cold"),
             "| query | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | recall@10 | same ids |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {mode} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['cpu_p50_ms']:.2f} | {m['cpu_p99_ms']:.2f} | "
              f"{m['recall_at_10']:.3f} | {m['same_ids_at_10']:.3f} |" for mode, m in s["modes"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
