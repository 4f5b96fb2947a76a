"""`lift-search index`: scan -> decode -> embed (backbone) -> LiFT -> store, each stage timed.

A run is incremental (only new or changed files are decoded; deleted files are removed) and
resumable (per-video features are cached as they are computed; the database and the vectors are
written in checkpoints whose order lets `reconcile` repair any crash).
"""
from __future__ import annotations

import errno
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby
from pathlib import Path

import cv2
import numpy as np
import torch
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError
from tqdm.auto import tqdm

from db import Clip, Failure, Video, delete_videos, get_setting, open_db, set_setting, write_refused
from lift import LiFT
from lift.backbones import Backbone, BackboneMismatch, BackboneRecord, load_backbone
from lift.checkpoint import download_official, load_checkpoint, model_digest
from lift.config import DEFAULT_BACKBONE, IndexOptions, default_lift
from lift.errors import LiftSearchError, UsageError
from lift.files import TEMP_SUFFIX
from lift.runtime import resolve_device
from lift.train import fit

from .decode import DecodePool
from .library import THUMB_HEIGHT, IndexDir, VideoFeatures
from .lock import IndexLock
from .reconcile import reconcile
from .scan import ScannedFile, content_hash, scan
from .store import StoreError, VectorStore
from .testpoint import enabled as _test_enabled
from .testpoint import testpoint

log = logging.getLogger(__name__)


__all__ = ["IndexOptions", "IndexReport", "IndexSettingsError", "IndexWriteError", "run_index", "describe",
           "library_sequences", "default_lift", "write_checkpoint"]


class IndexSettingsError(LiftSearchError, ValueError):
    """The index was built with other settings than the ones asked for."""


class IndexWriteError(LiftSearchError, RuntimeError):
    """The index folder cannot be written (disk full, read-only, no permission); the run stopped at its
    last checkpoint, which is intact."""


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}
# left behind by a run killed while writing one of them; removed by the next run, under the lock
_TEMP_PATTERNS = (f"*{TEMP_SUFFIX}", f"vectors/*{TEMP_SUFFIX}", f"features/*{TEMP_SUFFIX}", f"models/*{TEMP_SUFFIX}",
                  "features/*.tmp.npz", "models/incoming.safetensors", "*.part")  # (and older versions' names)


@dataclass
class IndexReport:
    new: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    clips_added: int = 0
    videos_total: int = 0
    clips_total: int = 0
    repaired: dict = field(default_factory=dict)
    read_modes: dict = field(default_factory=dict)   # videos decoded by this run: {"seek": n, "sequential": m}
    vectors: dict = field(default_factory=dict)      # the vector store's upkeep and how it serves searches
    lift: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=dict)     # name, device, runtime
    failures: list = field(default_factory=list)     # [{"path", "reason"}] of this run
    stages: dict = field(default_factory=dict)  # seconds per stage
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "stages": {k: round(v, 3) for k, v in self.stages.items()}}


class Runner:
    """Times the stages of a run (clip-retrieval style)."""

    def __init__(self, report: IndexReport):
        self.report = report

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.report.stages[name] = self.report.stages.get(name, 0.0) + time.perf_counter() - start


def run_index(roots: list[str | Path], index_dir: str | Path, opts: IndexOptions = IndexOptions()) -> IndexReport:
    idx = IndexDir(index_dir)
    report, started = IndexReport(), time.perf_counter()
    run = Runner(report)
    try:
        idx.root.mkdir(parents=True, exist_ok=True)
        with IndexLock(idx.root):
            try:
                _run_locked(roots, idx, opts, report, run)
            except (OSError, DBAPIError) as e:
                if _cannot_write(e, idx):
                    _clean_temp(idx)
                raise
    except (OSError, DBAPIError) as e:
        if not _cannot_write(e, idx):
            raise
        why = e.strerror if isinstance(e, OSError) else str(e.orig).strip()
        raise IndexWriteError(
            f"cannot write the index at {idx.root}: {why}. The run stopped; the index is as its last "
            f"completed checkpoint left it, and searches keep working. Free some space or fix the "
            f"permissions, then run again: finished work is not redone.") from e
    report.seconds = time.perf_counter() - started
    return report


def _run_locked(roots, idx: IndexDir, opts: IndexOptions, report: IndexReport, run: Runner) -> None:
    testpoint("start")
    _preflight_model(opts)  # before anything is written
    _clean_temp(idx)
    sessions = open_db(idx.choose_db(opts.db), write=True)
    device = resolve_device(opts.device)
    backbone = _open_backbone(sessions, opts, device)  # refuses other weights or preprocessing, before any work
    report.backbone = {"name": backbone.name, "device": str(backbone.device), "runtime": backbone.runtime}
    _check_settings(sessions, opts, roots, backbone.record)
    store = _open_store(idx, sessions, opts)
    report.repaired = reconcile(sessions, store)
    if report.repaired["removed_vectors"]:
        store.commit()

    with run.stage("scan"):
        pending, gone = _plan_work(sessions, roots, report)
    _remove_videos(sessions, store, idx, gone)

    ready = _extract_features(pending, idx, backbone, opts, sessions, run, report)

    with run.stage("lift"):
        model, model_hash = _resolve_model(idx, sessions, opts, backbone, ready, report)
    model = model.to(device)
    if store.meta.get("lift_hash") != model_hash:
        store = (_redescribe_all(sessions, idx, model, model_hash, store, run) if len(store)
                 else store.fresh(model.descriptor_dim, {"lift_hash": model_hash}))
    _store_new(ready, sessions, idx, store, model, opts, run, report)
    with run.stage("store"):
        report.vectors = store.maintain()  # merges, the approximate index; commits what it changed
        report.vectors["search"] = store.describe()
    with sessions.begin() as s:
        set_setting(s, "updated_at", time.strftime("%Y-%m-%d %H:%M:%S"))
        report.videos_total = s.query(Video).count()
        report.clips_total = s.query(Clip).count()
    _collect_garbage(idx, model_hash)
    testpoint("done")


def _cannot_write(e: Exception, idx: IndexDir) -> bool:
    """Is `e` the index folder or its database refusing a write (full, read-only, no permission)?"""
    if isinstance(e, DBAPIError):
        return write_refused(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    where = e.filename
    return e.errno in _WRITE_ERRNOS and (where is None or Path(os.fsdecode(where)).absolute().is_relative_to(idx.root))


def _clean_temp(idx: IndexDir) -> None:
    """Remove the temp files of an interrupted write (the caller holds the lock, so none is in use)."""
    for pattern in _TEMP_PATTERNS:
        for f in idx.root.glob(pattern):
            try:
                f.unlink(missing_ok=True)
            except OSError as e:  # a read-only folder: nothing was written there either
                log.warning("cannot remove %s: %s", f, e.strerror)


def _preflight_model(opts: IndexOptions) -> None:
    """A --lift PATH that cannot be used fails now, not after the hour of decoding it would follow."""
    if opts.lift not in ("auto", "fit", "official"):
        load_checkpoint(opts.lift)  # weights_only / safetensors: a hostile file is refused, never run


# ---- settings and stores ----------------------------------------------------------------------
def _open_backbone(sessions, opts: IndexOptions, device) -> Backbone:
    """The backbone of this run: the index's own (its recorded weights file unless other weights are
    given), or the one asked for on a new index. Other weights or preprocessing than those that made the
    index's features are refused, naming both digests."""
    with sessions() as s:
        name, recorded = get_setting(s, "backbone"), get_setting(s, "backbone_record")
    recorded = BackboneRecord.from_dict(recorded) if recorded else None
    if name and opts.backbone and opts.backbone != name:
        raise IndexSettingsError(f"this index was built with backbone {name}, not {opts.backbone}: use another "
                                 f"--index folder, or the same settings.")
    name = opts.backbone or name or DEFAULT_BACKBONE
    weights = opts.backbone_weights or (recorded.weights_file if recorded and recorded.name == name else None)
    try:
        return load_backbone(name, device=device, weights=weights, runtime=opts.runtime, expect=recorded)
    except BackboneMismatch as e:
        raise IndexSettingsError(
            f"this index's features were made by {recorded.name} with weights {recorded.weights_digest} "
            f"({recorded.weights_source}); this run would use " + "; ".join(e.differences) + ". Mixing them "
            "would make scores meaningless: use another --index folder, or the same backbone and weights.") from None


def _check_settings(sessions, opts: IndexOptions, roots, record: BackboneRecord) -> None:
    asked = {"backbone": record.name, "sampling": asdict(opts.sampling)}
    with sessions.begin() as s:
        for key, value in asked.items():
            have = get_setting(s, key)
            if have is None:
                set_setting(s, key, value)
            elif key == "sampling" and "scheme" not in have:
                raise IndexSettingsError(
                    "this index was built by an earlier lift-search, whose windows of long videos sampled "
                    "other frames (no sampling scheme recorded): build a new index with another --index folder "
                    "(the videos are decoded again) so that all its clips are comparable.")
            elif have != value:
                raise IndexSettingsError(
                    f"this index was built with {key} {have}, not {value}: use another --index folder, "
                    f"or the same settings.")
        if get_setting(s, "backbone_record") is None:
            if get_setting(s, "created_at") is not None:
                log.warning("this index was built by an earlier lift-search, which did not record its backbone's "
                            "weights: recording those of this run (%s, digest %s), assumed to be the same",
                            record.weights_source, record.weights_digest)
            set_setting(s, "backbone_record", record.to_dict())
        known = get_setting(s, "roots", [])
        set_setting(s, "roots", sorted(set(known) | {str(Path(r).absolute()) for r in roots}))
        if get_setting(s, "created_at") is None:
            set_setting(s, "created_at", time.strftime("%Y-%m-%d %H:%M:%S"))


def _open_store(idx: IndexDir, sessions, opts: IndexOptions) -> VectorStore:
    with sessions() as s:
        dim = get_setting(s, "dim")
    store = VectorStore(idx.vectors, dim or 0, config=opts.store)
    if dim is not None:
        try:  # (an index of lift-search 0.1 has one vectors.faiss: read now, migrated at the first commit)
            store = VectorStore.open(idx.vectors, dim, opts.store, writable=True, legacy=idx.legacy_vectors)
        except StoreError as e:  # never overwritten: it may be someone's file; the user decides
            raise StoreError(f"{e} Move it (or the folder {idx.vectors}) away and run again: the vectors are "
                             f"rebuilt from the cached features, nothing is decoded again.") from None
    if opts.ann:
        store.mode = opts.ann
    return store


# ---- scan: what is new, changed, gone -----------------------------------------------------------
@dataclass
class Pending:
    file: ScannedFile
    content_hash: str | None
    replaces: int | None = None  # id of the database row of an older version of the file


def _plan_work(sessions, roots: list, report: IndexReport):
    """What to do: the scanned files that are new or changed (Pending), and the ids of videos that are
    gone or changed. Known videos are looked up in batches by path and the gone ones found by streaming
    the paths: no row object per video, so a rerun on an unchanged library costs a stat and an index
    lookup per file."""
    files = scan(roots)
    roots = {str(Path(r).absolute()) for r in roots}
    seen = {f.path for f in files}
    pending, gone, unreadable, touched = [], [], [], []
    with sessions.begin() as s:
        for vid, path, root in s.execute(select(Video.id, Video.path, Video.root)).yield_per(10_000):
            if path not in seen and root in roots:
                gone.append(vid)
                report.removed += 1
        failed = {row.path: row for row in s.execute(select(Failure.id, Failure.path, Failure.size, Failure.mtime))}
        s.execute(delete(Failure).where(Failure.id.in_([row.id for p, row in failed.items() if p not in seen])))
        for i in range(0, len(files), 500):
            batch = files[i:i + 500]
            known = {row.path: row for row in s.execute(
                select(Video.id, Video.path, Video.size, Video.mtime, Video.content_hash)
                .where(Video.path.in_([f.path for f in batch])))}
            for f in batch:
                v, bad = known.get(f.path), failed.get(f.path)
                if v is not None and v.size == f.size and v.mtime == f.mtime:
                    report.unchanged += 1
                    continue
                if bad is not None and bad.size == f.size and bad.mtime == f.mtime:
                    continue  # failed before and unchanged since: not tried again
                try:
                    digest = content_hash(f.path) if f.size > 0 else None
                except OSError as e:  # unreadable (permissions, I/O error): recorded below, the run goes on
                    unreadable.append((f, f"unreadable file: {e.strerror}"))
                    continue
                if v is not None and digest == v.content_hash:
                    touched.append({"id": v.id, "size": f.size, "mtime": f.mtime})  # touched, not changed
                    report.unchanged += 1
                    continue
                if v is not None:
                    gone.append(v.id)
                    report.changed += 1
                else:
                    report.new += 1
                pending.append(Pending(f, digest, v.id if v else None))
        if touched:
            s.execute(update(Video), touched)
    for f, reason in unreadable:
        _record_failure(sessions, f, reason, report)
    return pending, gone


def _remove_videos(sessions, store: VectorStore, idx: IndexDir, video_ids: list[int]) -> None:
    if not video_ids:
        return
    with sessions() as s:
        clip_ids = [c for i in range(0, len(video_ids), 10_000)
                    for c in s.scalars(select(Clip.id).where(Clip.video_id.in_(video_ids[i:i + 10_000])))]
    if store.remove(clip_ids):  # vectors first, then rows: a crash in between is repaired
        store.commit()
    testpoint("removed-vectors")
    with sessions.begin() as s:
        delete_videos(s, video_ids)


def _record_failure(sessions, f: ScannedFile, reason: str, report: IndexReport) -> None:
    log.warning("skipped %s: %s", f.path, reason)
    report.failed += 1
    report.failures.append({"path": f.path, "reason": reason})
    with sessions.begin() as s:
        row = s.scalar(select(Failure).where(Failure.path == f.path))
        if row is None:
            s.add(Failure(path=f.path, size=f.size, mtime=f.mtime, reason=reason))
        else:
            row.size, row.mtime, row.reason = f.size, f.mtime, reason


# ---- decode + backbone --------------------------------------------------------------------------
def _thumbs(frames: np.ndarray, frame_indices: np.ndarray, plans) -> np.ndarray:
    pos = {int(f): i for i, f in enumerate(frame_indices)}
    out = []
    for p in plans:
        img = frames[pos[p.frame_indices[len(p.frame_indices) // 2]]]
        w = max(1, round(img.shape[1] * THUMB_HEIGHT / img.shape[0]))
        out.append(cv2.resize(img, (w, THUMB_HEIGHT), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _extract_features(pending: list[Pending], idx: IndexDir, backbone, opts: IndexOptions,
                      sessions, run: Runner, report: IndexReport) -> list[Pending]:
    """Cache each pending video's per-frame features; returns the videos that have them."""
    ready, todo = [], []
    for p in pending:
        if p.content_hash and idx.features_path(p.content_hash).is_file():
            ready.append(p)
        else:
            todo.append(p)
    if not todo:
        return ready
    bar = tqdm(total=len(todo), desc="decode+embed", unit="video", disable=not opts.progress)
    by_path = {p.file.path: p for p in todo}
    batch: list = []

    def flush():
        with run.stage("backbone"):  # one call per video: its features must not depend on which other
            # videos share the batch (they differ by ~1e-5 otherwise), or a resumed run would differ
            feats = [backbone.encode_frames(d.frames) for d, _ in batch]
        with run.stage("cache"):
            for (decoded, p), f in zip(batch, feats):
                VideoFeatures(decoded.info, decoded.plans, decoded.frame_indices, f,
                              _thumbs(decoded.frames, decoded.frame_indices, decoded.plans), decoded.read_mode
                              ).save(idx.features_path(p.content_hash))
                report.read_modes[decoded.read_mode] = report.read_modes.get(decoded.read_mode, 0) + 1
                ready.append(p)
                testpoint("feature-cached")
        bar.update(len(batch))
        batch.clear()

    with DecodePool(workers=opts.workers, timeout_s=opts.timeout_s, short_side=backbone.preprocess.resize,
                    sampling=opts.sampling, _test_hooks=_test_enabled("decoder")) as pool:
        testpoint("decode-start")
        results = pool.imap([p.file.path for p in todo])
        while True:
            with run.stage("decode (waiting)"):
                decoded = next(results, None)
            if decoded is None:
                break
            p = by_path[decoded.path]
            report.stages["decode (workers)"] = report.stages.get("decode (workers)", 0.0) + decoded.seconds
            if decoded.error or not decoded.plans:
                _record_failure(sessions, p.file, decoded.error or "no clips (no frames)", report)
                bar.update(1)
                continue
            batch.append((decoded, p))
            if sum(len(d.frames) for d, _ in batch) >= opts.batch_frames:
                flush()
        if batch:
            flush()
    bar.close()
    return ready


# ---- the LiFT model -----------------------------------------------------------------------------
def _resolve_model(idx: IndexDir, sessions, opts: IndexOptions, backbone: Backbone, ready: list[Pending],
                   report: IndexReport) -> tuple[LiFT, str]:
    spec = default_lift(backbone.name) if opts.lift == "auto" else opts.lift
    with sessions() as s:
        current = get_setting(s, "lift")
    if current and not opts.refit and (opts.lift == "auto" or spec == current["spec"]):
        if opts.fit_options_given:
            log.warning("%s ignored: this index already has its LiFT (%s, d=%s); add --refit to retrain it with "
                        "them and re-describe every clip", ", ".join(opts.fit_options_given), current["spec"],
                        current.get("latent_dim"))
        model = load_checkpoint(idx.model_path(current["hash"]))
        report.lift = current
        return model, current["hash"]
    if spec == "fit":
        seqs = library_sequences(idx, sessions, ready, max_clips=opts.train.max_clips, seed=opts.train.seed)
        if len(seqs) < 2:
            raise UsageError("--lift fit needs at least 2 clips with features to train on; index more videos "
                             "or pass --lift PATH / --lift official")
        log.info("training a LiFT (d=%d) on %d clips of this library", opts.train.latent_dim, len(seqs))
        testpoint("fit-start")
        model, _ = fit(seqs, tc=replace(opts.train, device=str(resolve_device(opts.device))))
    else:
        model = load_checkpoint(download_official() if spec == "official" else spec)
    model.config.backbone = model.config.backbone or backbone.name
    if model.config.feature_dim != backbone.dim:
        raise IndexSettingsError(f"the LiFT model reads {model.config.feature_dim}-d features but backbone "
                                 f"{backbone.name} gives {backbone.dim}-d: pick the matching --backbone.")
    digest = model_digest(model)
    model.save(idx.model_path(digest))
    testpoint("model-saved")
    report.lift = {"spec": spec, "hash": digest, "latent_dim": model.config.latent_dim,
                   "provenance": model.config.provenance}
    with sessions.begin() as s:
        set_setting(s, "lift", report.lift)
        set_setting(s, "dim", model.descriptor_dim)
    return model, digest


def library_sequences(idx: IndexDir, sessions, ready: list[Pending], max_clips: int | None = None,
                      seed: int = 0) -> np.ndarray:
    """The feature sequences (N, T, D) of the library's clips (indexed videos and those about to be), in the
    order of their videos' paths (not of their feature files, named by content hash: a re-encoded copy of
    the same library, whose containers differ in a random id, trains the same LiFT); at most `max_clips` of them: then a seeded sample spread over the videos
    (each video gives an equal share of clips, picked at random within it, or, with more videos than
    clips wanted, that many videos give one clip each). Only the sampled clips are ever held in memory:
    each feature file is read in turn, and the files of unsampled videos are not read at all."""
    with sessions() as s:
        rows = s.execute(select(Video.path, Video.features, func.count(Clip.id)).join(Clip).group_by(Video.id))
        counts, video = {}, {}
        for path, f, n in rows:
            counts[idx.root / f], video[idx.root / f] = n, path
    for p in ready:  # not indexed yet: its clips are counted from its file (its header only)
        path = idx.features_path(p.content_hash)
        counts[path] = counts.get(path) or VideoFeatures.count_clips(path)
        video.setdefault(path, p.file.path)
    files = sorted(counts, key=lambda f: (video[f], f))
    picks = ({f: None for f in files} if max_clips is None or sum(counts.values()) <= max_clips
             else _spread(files, counts, max_clips, seed))
    out, n = None, 0
    for f, rows in picks.items():
        clips = VideoFeatures.load(f).clip_sequences()  # (c, T, D)
        clips = clips if rows is None else clips[rows]
        if out is None:  # one array for the whole sample, filled as the files are read
            out = np.empty((sum(counts[g] if r is None else len(r) for g, r in picks.items()), *clips.shape[1:]),
                           np.float32)
        out[n:n + len(clips)] = clips
        n += len(clips)
    return out[:n] if out is not None else np.zeros((0,))


def _spread(files: list, counts: dict, max_clips: int, seed: int) -> dict:
    """{feature file: sorted clip rows} for `max_clips` clips spread over the videos (seeded): with more
    videos than clips wanted, that many videos give one clip each; otherwise each video gives an equal
    share (a short video all its clips, the rest shared among the others), clips picked at random."""
    rng = np.random.default_rng(seed)
    files = [f for f in files if counts[f]]
    if len(files) >= max_clips:
        chosen = np.sort(rng.choice(len(files), size=max_clips, replace=False))
        return {files[i]: rng.choice(counts[files[i]], size=1) for i in chosen}
    share, left = {}, max_clips
    for i, f in enumerate(sorted(files, key=lambda f: counts[f])):  # fewest clips first
        share[f] = min(counts[f], left // (len(files) - i))
        left -= share[f]
    return {f: np.sort(rng.choice(counts[f], size=share[f], replace=False)) for f in files}


def describe(model: LiFT, seqs: np.ndarray, batch: int = 256) -> np.ndarray:
    device = model.feature_mean.device
    out = [model.describe(torch.as_tensor(seqs[i:i + batch], device=device)).cpu().numpy()
           for i in range(0, len(seqs), batch)]
    return np.concatenate(out) if out else np.zeros((0, model.descriptor_dim), np.float32)


# ---- describe + store ---------------------------------------------------------------------------
def _store_new(ready: list[Pending], sessions, idx: IndexDir, store: VectorStore, model: LiFT,
               opts: IndexOptions, run: Runner, report: IndexReport) -> None:
    bar = tqdm(total=len(ready), desc="describe+store", unit="video", disable=not opts.progress or not ready)
    for i in range(0, len(ready), opts.checkpoint_videos):
        chunk = ready[i:i + opts.checkpoint_videos]
        with run.stage("lift"):
            items = [(p, VideoFeatures.load(idx.features_path(p.content_hash))) for p in chunk]
            vectors = describe(model, np.concatenate([vf.clip_sequences() for _, vf in items]))
        with run.stage("store"):
            report.clips_added += len(write_checkpoint(sessions, idx, store, items, vectors))
            store.maintain()  # merges segments, trains the approximate index, as the store's size asks
        bar.update(len(chunk))
    bar.close()
    if not store.committed:
        store.commit()


def write_checkpoint(sessions, idx: IndexDir, store: VectorStore, items: list, vectors: np.ndarray) -> list[int]:
    """Store new videos: `items` [(Pending, VideoFeatures)] and their clips' descriptors (in order), database
    first, then the vectors (one new segment). Returns the new clip ids. On a failure to write the vectors
    (e.g. a full disk) the rows are taken back, so the index stays as it was."""
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


def _redescribe_all(sessions, idx: IndexDir, model: LiFT, model_hash: str, old: VectorStore, run: Runner):
    """The LiFT weights changed: recompute every stored clip's descriptor from the cached features, into
    new segments that replace the old ones at one commit (streamed: one video's clips at a time)."""
    log.info("LiFT weights changed: re-describing all %d clips from cached features", len(old))
    store = old.fresh(model.descriptor_dim, {"lift_hash": model_hash})
    rows = (select(Clip.video_id, Clip.id, Video.features).join(Video).order_by(Clip.video_id, Clip.ordinal))
    with sessions() as s, run.stage("lift"):
        for _, clips in groupby(s.execute(rows).yield_per(10_000), key=lambda r: r.video_id):
            clips = list(clips)
            vf = VideoFeatures.load(idx.root / clips[0].features)
            store.add([c.id for c in clips], describe(model, vf.clip_sequences()))
    store.commit()
    return store


def _collect_garbage(idx: IndexDir, model_hash: str) -> None:
    for f in idx.models.glob("*.safetensors"):
        if f.stem != model_hash:
            f.unlink(missing_ok=True)
