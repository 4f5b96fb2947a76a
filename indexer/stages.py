"""The stages of an index run, each an object with one job (clip-retrieval's reader -> mapper -> writer):

    Planner    the roots against the database: what is new, changed, gone, unreadable      (driver)
    Decoder    the sampled frames of each video, in crash-isolated processes (DecodePool)    (CPU)
    Embedder   decoded frames -> per-frame backbone features, cached in the index folder    (CPU or GPU;
               indexer/embed.py, light to import: a Ray actor needs it, not the database)
    Describer  cached features -> LiFT descriptors                                          (driver)
    Writer     failures, removals, and the database-then-vectors checkpoints                (driver, alone)
    Runner     times the stages

The local runner (indexer.pipeline.run_index) and the Ray runner (indexer.ray_runner) use the same pieces:
the Decoder and the Embedder run in this process or in Ray actors, the rest always in the driver, so the
checkpoints, their order and what a crash can leave are the same however the features were made.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from tqdm.auto import tqdm

from db import Clip, Failure, Video, delete_videos, get_setting, in_parts, set_setting
from lift.config import IndexOptions

from .embed import Timing
from .library import IndexDir, VideoFeatures
from .reconcile import reconcile
from .scan import ScannedFile, content_hash, scan
from .store import VectorStore
from .testpoint import testpoint

if TYPE_CHECKING:  # torch is imported where it is used
    from lift import LiFT

log = logging.getLogger(__name__)


class Runner:
    """Times the stages of a run into its report (clip-retrieval style)."""

    def __init__(self, stages: dict[str, float]):
        self.stages, self.started = stages, time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add({name: time.perf_counter() - start})

    def add(self, timing: Timing) -> None:
        """Seconds measured elsewhere (a worker process, a Ray actor)."""
        for name, seconds in timing.items():
            self.stages[name] = self.stages.get(name, 0.0) + seconds


# ---- scan: what is new, changed, gone -----------------------------------------------------------
@dataclass
class Pending:
    file: ScannedFile
    content_hash: str | None
    replaces: int | None = None  # id of the database row of an older version of the file


@dataclass
class Plan:
    pending: list[Pending] = field(default_factory=list)   # new or changed files, in scan order
    gone: list[int] = field(default_factory=list)          # video ids of deleted or changed files
    unreadable: list[tuple[ScannedFile, str]] = field(default_factory=list)  # (file, reason)
    counts: dict = field(default_factory=lambda: dict(new=0, changed=0, removed=0, unchanged=0))

    def split(self, idx: IndexDir) -> tuple[list[Pending], list[Pending]]:
        """(pending videos whose features are cached already, those still to decode)."""
        has = [bool(p.content_hash) and idx.features_path(p.content_hash).is_file() for p in self.pending]
        return ([p for p, h in zip(self.pending, has) if h], [p for p, h in zip(self.pending, has) if not h])


class Planner:
    """Scans the roots against the database: files new or changed since the last run (by size and mtime,
    then content hash), deleted ones, and unreadable ones. Files that failed before and have not changed
    since are not tried again; failure rows of files that are gone are dropped; a touched but unchanged
    file gets its new mtime. Known videos are looked up in batches by path and the gone ones found by
    streaming the paths: no row object per video, so a rerun on an unchanged library costs a stat and an
    index lookup per file."""

    def __init__(self, sessions, roots: list, batch: int = 500):
        self.sessions, self.roots, self.batch = sessions, roots, batch

    def __call__(self) -> Plan:
        files, plan, touched = scan(self.roots), Plan(), []
        roots = {str(Path(r).absolute()) for r in self.roots}
        seen = {f.path for f in files}
        with self.sessions.begin() as s:
            for vid, path, root in s.execute(select(Video.id, Video.path, Video.root)).yield_per(10_000):
                if path not in seen and root in roots:
                    plan.gone.append(vid)
                    plan.counts["removed"] += 1
            failed = {row.path: row for row in s.execute(select(Failure.id, Failure.path, Failure.size, Failure.mtime))}
            s.execute(delete(Failure).where(Failure.id.in_([row.id for p, row in failed.items() if p not in seen])))
            for i in range(0, len(files), self.batch):
                batch = files[i:i + self.batch]
                known = {row.path: row for row in s.execute(
                    select(Video.id, Video.path, Video.size, Video.mtime, Video.content_hash)
                    .where(Video.path.in_([f.path for f in batch])))}
                for f in batch:
                    self._plan_file(f, known.get(f.path), failed.get(f.path), plan, touched)
            if touched:
                s.execute(update(Video), touched)
        return plan

    @staticmethod
    def _plan_file(f: ScannedFile, v, bad, plan: Plan, touched: list) -> None:
        """One scanned file against its video row ``v`` and failure row ``bad`` (None: none)."""
        if v is not None and v.size == f.size and v.mtime == f.mtime:
            plan.counts["unchanged"] += 1
            return
        if bad is not None and bad.size == f.size and bad.mtime == f.mtime:
            return  # failed before and unchanged since: not tried again
        try:
            digest = content_hash(f.path) if f.size > 0 else None
        except OSError as e:  # unreadable (permissions, I/O error): recorded, the run goes on
            plan.unreadable.append((f, f"unreadable file: {e.strerror}"))
            return
        if v is not None and digest == v.content_hash:
            touched.append({"id": v.id, "size": f.size, "mtime": f.mtime})  # touched, not changed
            plan.counts["unchanged"] += 1
            return
        if v is not None:
            plan.gone.append(v.id)
            plan.counts["changed"] += 1
        else:
            plan.counts["new"] += 1
        plan.pending.append(Pending(f, digest, v.id if v else None))


# ---- describe -----------------------------------------------------------------------------------
class Describer:
    """Clip feature sequences (N, T, D) -> stored descriptors (N, 2d), with the run's LiFT (stage 4)."""

    def __init__(self, model: "LiFT", batch: int = 256):
        self.model, self.batch = model, batch

    def __call__(self, seqs: np.ndarray) -> np.ndarray:
        import torch

        device = self.model.feature_mean.device
        out = [self.model.describe(torch.as_tensor(seqs[i:i + self.batch], device=device)).cpu().numpy()
               for i in range(0, len(seqs), self.batch)]
        return np.concatenate(out) if out else np.zeros((0, self.model.descriptor_dim), np.float32)


# ---- write --------------------------------------------------------------------------------------
class Writer:
    """Every write to the database and the vectors, in the driver alone (stage 5).

    New clips: database commit first, then the vectors (a crash in between leaves rows without vectors,
    which `reconcile` re-queues); deleted videos: vectors first, then rows (a crash leaves vectors without
    rows, which it drops). A vector commit that fails (disk full) takes its rows back. The vector store keeps
    itself in shape (merges, the approximate index) after each checkpoint (`VectorStore.maintain`)."""

    def __init__(self, sessions, idx: IndexDir, store: VectorStore):
        self.sessions, self.idx, self.store = sessions, idx, store
        self.failures: list[dict] = []  # [{"path", "reason"}] recorded in this run
        self.clips_added = 0

    def repair(self) -> dict:
        """Bring the database and the vectors into agreement after a crash (see reconcile)."""
        repaired = reconcile(self.sessions, self.store)
        if repaired["removed_vectors"]:
            self.store.commit()
        return repaired

    def fail(self, f: ScannedFile, reason: str) -> None:
        """Record that a file cannot be indexed, and why (not tried again until it changes)."""
        log.warning("skipped %s: %s", f.path, reason)
        self.failures.append({"path": f.path, "reason": reason})
        with self.sessions.begin() as s:
            row = s.scalar(select(Failure).where(Failure.path == f.path))
            if row is None:
                s.add(Failure(path=f.path, size=f.size, mtime=f.mtime, reason=reason))
            else:
                row.size, row.mtime, row.reason = f.size, f.mtime, reason

    def remove(self, video_ids: list[int]) -> None:
        if not video_ids:
            return
        with self.sessions() as s:
            clip_ids = [c for part in in_parts(video_ids) for c in s.scalars(select(Clip.id).where(Clip.video_id.in_(part)))]
        if self.store.remove(clip_ids):  # vectors first, then rows: a crash in between is repaired
            self.store.commit()
        testpoint("removed-vectors")
        with self.sessions.begin() as s:
            delete_videos(s, video_ids)

    def use_lift(self, describe: Describer, lift_hash: str) -> None:
        """The vectors of this LiFT from now on: when the stored ones were made by other weights, every
        stored clip is described again from its cached features (none is decoded again), into new segments
        that replace the old ones at one commit (streamed: one video's clips at a time)."""
        if self.store.meta.get("lift_hash") == lift_hash:
            return
        old = self.store
        self.store = old.fresh(describe.model.descriptor_dim, {"lift_hash": lift_hash})
        if not len(old):
            return
        log.info("LiFT weights changed: re-describing all %d clips from cached features", len(old))
        rows = select(Clip.video_id, Clip.id, Video.features).join(Video).order_by(Clip.video_id, Clip.ordinal)
        with self.sessions() as s:
            for _, clips in groupby(s.execute(rows).yield_per(10_000), key=lambda r: r.video_id):
                clips = list(clips)
                vf = VideoFeatures.load(self.idx.root / clips[0].features)
                self.store.add([c.id for c in clips], describe(vf.clip_sequences()))
        self.store.commit()

    def checkpoint(self, items: list[tuple[Pending, VideoFeatures]], vectors: np.ndarray) -> None:
        """Add videos with their clips' vectors (in clip order): database commit, then the vectors."""
        self.clips_added += len(write_checkpoint(self.sessions, self.idx, self.store, items, vectors))

    def add_all(self, ready: list[Pending], describe: Describer, per_checkpoint: int, run: Runner,
                progress: bool = True) -> None:
        """Describe and store the videos whose features are cached, ``per_checkpoint`` videos a checkpoint."""
        bar = tqdm(total=len(ready), desc="describe+store", unit="video", disable=not progress or not ready)
        for i in range(0, len(ready), per_checkpoint):
            chunk = ready[i:i + per_checkpoint]
            with run.stage("lift"):
                items = [(p, VideoFeatures.load(self.idx.features_path(p.content_hash))) for p in chunk]
                vectors = describe(np.concatenate([vf.clip_sequences() for _, vf in items]))
            with run.stage("store"):
                self.checkpoint(items, vectors)
                self.store.maintain()  # merges segments, trains the approximate index, as the store's size asks
            bar.update(len(chunk))
        bar.close()
        if not self.store.committed:
            self.store.commit()


def write_checkpoint(sessions, idx: IndexDir, store: VectorStore, items: list[tuple[Pending, VideoFeatures]],
                     vectors: np.ndarray) -> list[int]:
    """Store new videos: ``items`` and their clips' descriptors (in order), database first (bulk inserts),
    then the vectors (one new segment). Returns the new clip ids. On a failure to write the vectors (e.g. a
    full disk) the rows are taken back, so the index stays as it was."""
    with sessions.begin() as s:  # database first ...
        # clip ids are never reused (a search engine opened earlier still holds the vectors of
        # deleted clips under their ids): they continue from the highest ever given out
        next_id = max(get_setting(s, "next_clip_id", 1), (s.scalar(select(func.max(Clip.id))) or 0) + 1)
        s.execute(delete(Failure).where(Failure.path.in_([p.file.path for p, _ in items])))
        videos = [Video(path=p.file.path, root=p.file.root, size=p.file.size, mtime=p.file.mtime,
                        content_hash=p.content_hash, n_frames=vf.info.n_frames, fps=vf.info.fps,
                        width=vf.info.width, height=vf.info.height, read_mode=vf.read_mode,
                        features=str(idx.features_path(p.content_hash).relative_to(idx.root))) for p, vf in items]
        s.add_all(videos)
        s.flush()
        rows = []
        for v, (_, vf) in zip(videos, items):
            rows += [{"id": next_id + len(rows) + j, "video_id": v.id, "ordinal": j, "start_s": c.start_s,
                      "end_s": c.end_s, "frame_indices": list(c.frame_indices)} for j, c in enumerate(vf.plans)]
        if rows:
            s.execute(insert(Clip), rows)
        ids = [r["id"] for r in rows]  # the vectors' order
        set_setting(s, "next_clip_id", next_id + len(rows))
    testpoint("db-committed")
    store.add(ids, vectors)  # ... then the vectors
    try:
        store.commit()
    except BaseException:  # e.g. disk full: take the rows back, so the index stays as it was
        _undo(store, sessions, [v.id for v in videos])
        raise
    return ids


def _undo(store: VectorStore, sessions, video_ids: list[int]) -> None:
    try:
        store.rollback()
        with sessions.begin() as s:
            delete_videos(s, video_ids)
    except Exception as e:  # reconcile re-queues them at the next run or search
        log.warning("could not take back %d video rows (%s); the next run repairs it", len(video_ids), e)


def progress_bar(total: int, opts: IndexOptions) -> tqdm:
    return tqdm(total=total, desc="decode+embed", unit="video", disable=not opts.progress)


__all__ = ["Runner", "Timing", "Pending", "Plan", "Planner", "Describer", "Writer", "write_checkpoint",
           "progress_bar"]  # the Embedder: indexer.embed
