"""`lift-search index`: scan -> decode -> embed (backbone) -> LiFT -> store, each stage timed.

A run is incremental (only new or changed files are decoded; deleted files are removed) and
resumable (per-video features are cached as they are computed; the database and the vectors are
written in checkpoints whose order lets `reconcile` repair any crash). The stages are the objects of
indexer/stages.py; `run_index` is the local runner. With ``IndexOptions.ray`` the decode and embed
stages run on a Ray cluster instead (indexer/ray_runner.py); everything else is the same.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from db import Clip, Video, get_setting, open_db, set_setting, write_refused
from lift import LiFT
from lift.backbones import Backbone, BackboneMismatch, BackboneRecord, load_backbone
from lift.checkpoint import download_official, load_checkpoint, model_digest
from lift.config import DEFAULT_BACKBONE, IndexOptions, default_lift, default_pooling
from lift.errors import LiftSearchError, UsageError
from lift.files import TEMP_SUFFIX
from lift.runtime import resolve_device
from lift.train import fit, lift_config

from .decode import DecoderConfig, failure_reason
from .library import IndexDir, VideoFeatures
from .lock import IndexLock
from .embed import Embedder
from .stages import Describer, Pending, Planner, Runner, Writer, progress_bar, write_checkpoint
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
    decoded: int = 0                                 # videos sent to the decoder (features not cached yet)
    clips_added: int = 0
    videos_total: int = 0
    clips_total: int = 0
    repaired: dict = field(default_factory=dict)
    read_modes: dict = field(default_factory=dict)   # videos decoded by this run: {"seek": n, "sequential": m}
    vectors: dict = field(default_factory=dict)      # the vector store's upkeep and how it serves searches
    lift: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=dict)     # name, device, runtime (and the Ray cluster's resources)
    failures: list = field(default_factory=list)     # [{"path", "reason"}] of this run
    stages: dict = field(default_factory=dict)  # seconds per stage
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "stages": {k: round(v, 3) for k, v in self.stages.items()}}


def run_index(roots: list[str | Path], index_dir: str | Path, opts: IndexOptions = IndexOptions()) -> IndexReport:
    idx = IndexDir(index_dir)
    report, started = IndexReport(), time.perf_counter()
    try:
        idx.root.mkdir(parents=True, exist_ok=True)
        with IndexLock(idx.root):
            try:
                _run_locked(roots, idx, opts, report)
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


def _run_locked(roots, idx: IndexDir, opts: IndexOptions, report: IndexReport) -> None:
    run = Runner(report.stages)
    testpoint("start")
    _preflight_model(opts)  # before anything is written
    _clean_temp(idx)
    sessions = open_db(idx.choose_db(opts.db), write=True)
    device = resolve_device("auto" if opts.ray else opts.device)  # with Ray: the driver's, for the LiFT
    # The backbone refuses other weights or preprocessing than the index's, before any work. With Ray it only
    # proves the record (the actors embed), and loads while the driver joins the cluster or starts one (--ray
    # auto), even for a run that will find nothing new: that is known only once the backbone has checked the index.
    with ExitStack() as stack:  # with Ray: the connection (a cluster the run started stops with it)
        if opts.ray:
            from .ray_runner import connected

            loading = stack.enter_context(ThreadPoolExecutor(1)).submit(_open_backbone, sessions, opts, device)
            stack.enter_context(connected(opts, run))
            backbone = loading.result()
        else:
            backbone = _open_backbone(sessions, opts, device)
        report.backbone = {"name": backbone.name, "device": str(backbone.device), "runtime": backbone.runtime}
        _check_settings(sessions, opts, roots, backbone.record)
        writer = Writer(sessions, idx, _open_store(idx, sessions, opts))
        report.failures = writer.failures
        report.repaired = writer.repair()

        with run.stage("scan"):                                    # 1. plan
            plan = Planner(sessions, roots)()
        for k, v in plan.counts.items():
            setattr(report, k, v)
        for f, reason in plan.unreadable:
            writer.fail(f, reason)
        writer.remove(plan.gone)

        cached, todo = plan.split(idx)                             # 2.-3. decode + embed, features cached
        report.decoded = len(todo)
        if opts.ray:  # the same stages on a Ray cluster: the Embedder there is built from this one's record
            from .ray_runner import extract_features_ray as extract
        else:
            extract = extract_features
        ready = extract(todo, Embedder(backbone, idx), opts, writer, run, report)
        if opts.ray:  # a Ray worker killed while caching features (Ray restarts it, retries its task) left a
            _clean_temp(idx)  # temp file; the cluster's work is done: disconnect (a cluster the run started stops)
            stack.close()

        with run.stage("lift"):                                    # 4. the LiFT: the index's, given, or trained
            model, model_hash = _resolve_model(idx, sessions, opts, backbone, cached + ready, report, device)
        describe = Describer(model.to(device))
        writer.use_lift(describe, model_hash)                      # (re-describes all clips if it changed)
        writer.add_all(cached + ready, describe, opts.checkpoint_videos, run, opts.progress)  # 5. store
        report.clips_added, report.failed = writer.clips_added, len(writer.failures)
        with run.stage("store"):
            report.vectors = writer.store.maintain()  # merges, the approximate index; commits what it changed
            report.vectors["search"] = writer.store.describe()
        with sessions.begin() as s:
            set_setting(s, "updated_at", time.strftime("%Y-%m-%d %H:%M:%S"))
            report.videos_total = s.query(Video).count()
            report.clips_total = s.query(Clip).count()
        _collect_garbage(idx, model_hash)
        testpoint("done")


def extract_features(todo: list[Pending], embed: Embedder, opts: IndexOptions, writer: Writer,
                     run: Runner, report: IndexReport) -> list[Pending]:
    """The local runner's decode + embed: decoding in ``opts.workers`` processes overlaps the backbone in
    this one; each video's features are cached as soon as they are made. Returns the videos that have them."""
    if not todo:
        return []
    ready, batch, by_path = [], [], {p.file.path: p for p in todo}
    bar = progress_bar(len(todo), opts)

    def flush():
        run.add(embed([(d, p.content_hash) for d, p in batch]))
        if not ready:  # the run's start-up: the backbone, decoder processes, the first batch of videos
            run.add({"first features (start-up)": run.elapsed()})
        for d, p in batch:
            report.read_modes[d.read_mode] = report.read_modes.get(d.read_mode, 0) + 1
            ready.append(p)
            testpoint("feature-cached")
        bar.update(len(batch))
        batch.clear()

    config = DecoderConfig(embed.backbone.preprocess.resize, opts.sampling, opts.timeout_s, _test_enabled("decoder"))
    with config.pool(opts.workers) as pool:
        testpoint("decode-start")
        results = pool.imap([p.file.path for p in todo])
        while True:
            with run.stage("decode (waiting)"):
                decoded = next(results, None)
            if decoded is None:
                break
            p = by_path[decoded.path]
            run.add({"decode (workers)": decoded.seconds})
            if reason := failure_reason(decoded):
                writer.fail(p.file, reason)
                bar.update(1)
                continue
            batch.append((decoded, p))
            if sum(len(d.frames) for d, _ in batch) >= opts.batch_frames:
                flush()
        if batch:
            flush()
    bar.close()
    return ready


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
    new, name = name is None, opts.backbone or name or DEFAULT_BACKBONE
    weights = opts.backbone_weights or (recorded.weights_file if recorded and recorded.name == name else None)
    # the index's own pooling; an index from before backbone records had the pooled features ("global")
    pooling = opts.pooling or (recorded.pooling if recorded else default_pooling(name) if new else "global")
    try:
        # with Ray the driver's backbone proves the record and gives CPU actors its ONNX export (the actors embed)
        return load_backbone(name, device="cpu" if opts.ray else device, weights=weights, runtime=opts.runtime,
                             pooling=pooling, expect=recorded)
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
    if dim is None:
        store = VectorStore(idx.vectors, 0, config=opts.store)
    else:
        try:  # (an index of lift-search 0.1 has one vectors.faiss: read now, migrated at the first commit)
            store = VectorStore.open(idx.vectors, dim, opts.store, writable=True, legacy=idx.legacy_vectors)
        except StoreError as e:  # never overwritten: it may be someone's file; the user decides
            raise StoreError(f"{e} Move it (or the folder {idx.vectors}) away and run again: the vectors are "
                             f"rebuilt from the cached features, nothing is decoded again.") from None
    if opts.ann:
        store.mode = opts.ann
    return store


# ---- the LiFT model -----------------------------------------------------------------------------
def _resolve_model(idx: IndexDir, sessions, opts: IndexOptions, backbone: Backbone, ready: list[Pending],
                   report: IndexReport, device) -> tuple[LiFT, str]:
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
        tc = replace(opts.train, device=str(device))
        model, _ = fit(seqs, lift_config(backbone.dim, tc, backbone.record.cells), tc)
    else:
        model = load_checkpoint(download_official() if spec == "official" else spec)
    model.config.backbone = model.config.backbone or backbone.name
    if model.config.feature_dim != backbone.dim:
        raise IndexSettingsError(f"the LiFT model reads {model.config.feature_dim}-d features but backbone "
                                 f"{backbone.name} with pooling {backbone.record.pooling} gives {backbone.dim}-d: "
                                 f"pick the matching --backbone and --pooling.")
    cells = backbone.record.cells
    if (model.config.flow_grid, model.config.flow_channels) != ((cells.grid, cells.channels) if cells else (0, 0)):
        raise IndexSettingsError(f"the LiFT model reads frames with a {model.config.flow_grid}-cell grid of "
                                 f"{model.config.flow_channels} channels, which backbone {backbone.name} with "
                                 f"pooling {backbone.record.pooling} does not give: pick the matching --pooling.")
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
    """Descriptors (N, 2d) of clip feature sequences (N, T, D), as the index stores them."""
    return Describer(model, batch)(seqs)


def _collect_garbage(idx: IndexDir, model_hash: str) -> None:
    for f in idx.models.glob("*.safetensors"):
        if f.stem != model_hash:
            f.unlink(missing_ok=True)
