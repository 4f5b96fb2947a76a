"""Decode and embed on a Ray cluster: `lift-search index DIR --index IDX --ray [auto|ADDRESS]`.

The stages of indexer/stages.py in a Ray Data stream (install with ``pip install "lift-search[ray]"``), laid
out one of two ways. With GPUs, decoders on the CPUs feed one embedder per GPU:

    from_items(videos to decode)
      -> DecodeActor  x opts.workers   CPU actors, each with a one-process DecodePool: a file that crashes or
                                      hangs decord kills that process (recorded as the file's failure, as in a
                                      local run), never the actor
      -> EmbedActor   x GPUs           the backbone (num_gpus=1 per actor), caches each video's features in the
                                      index folder, which a cluster keeps on a shared filesystem, exactly as
                                      the local runner does
      -> the driver                    records failures and collects the ready videos as they come (then
                                      puts them in input order), with a progress bar; then trains or loads the LiFT and
                                      writes the database and the vectors alone, in the same checkpoints

With CPUs only, each actor does both: DecodeEmbedActor x opts.workers, a one-process DecodePool and the driver's
ONNX export of the backbone (lift.onnx_frames: no torch) on its share of the CPUs. No frames cross between
actors: relaying them through Ray's object store took half as much CPU again as decoding them, CPU that the
backbone needs (docs/benchmarks.md, "Ray on one machine").

Ray Data streams with backpressure, so only a few decoded videos are in flight. A lost worker is Ray's to
handle: its actor is restarted and its task retried (Ray Data's default for actor pools), so it costs time,
not a video. A killed driver takes its job's actors with it; the next run skips every video whose features
were cached and every failure recorded, so nothing finished is decoded again.
"""
from __future__ import annotations

import logging
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from lift.config import IndexOptions
from lift.errors import BackboneError, UsageError

from .decode import Decoded, DecoderConfig, failure_reason
from .testpoint import enabled as _test_enabled
from .testpoint import testpoint

if TYPE_CHECKING:  # an actor imports this module: only what decoding needs, no torch, no database
    from .embed import Embedder, EmbedderSpec
    from .stages import Pending, Runner, Writer

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lift", "indexer", "db")  # what the workers import


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError('--ray needs Ray Data: pip install "lift-search[ray]"') from None
    return ray


def connect(address: str, num_cpus: int | None = None) -> bool:
    """Connect this process to a Ray cluster; True if it did (and must disconnect), False if it already was
    (a session of the caller's: a notebook, the tests). "auto": a cluster running on this machine (`ray start
    --head`), else a new local one with ``num_cpus`` CPUs (default: all); otherwise the address of a cluster
    ("ray://HOST:10001" or "HOST:6379"). On a cluster it joins, the workers get this project's packages
    through the job's runtime_env (py_modules); a local cluster it starts inherits them through PYTHONPATH, and
    runs its workers at this process's priority, as the local pipeline's processes run (by default Ray lowers its
    workers' priority, worker_niceness 15: on a machine shared with other jobs that starves the run)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kw = dict(include_dashboard=False, logging_level=logging.WARNING)
    shipped = {"py_modules": [str(PROJECT_ROOT / p) for p in PACKAGES]}
    if address == "auto":
        try:
            ray.init(address="auto", runtime_env=shipped, **kw)
        except ConnectionError:  # none running here: start one, its workers import this checkout's code
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
            ray.init(num_cpus=num_cpus or os.cpu_count(), _system_config={"worker_niceness": 0}, **kw)
    else:
        try:
            ray.init(address=address, runtime_env=shipped, **kw)
        except ConnectionError as e:
            raise UsageError(f"cannot join the Ray cluster at {address}: {e}. Is it running and reachable from here? "
                             "A cluster with token authentication wants its token on this machine too "
                             "(RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
    return True


DECODE_BATCH = 4  # videos per decoder call: one call a video spent ~10 ms of Ray Data's scheduling on each
FUSED_BATCH = 2   # videos per call of an actor that decodes and embeds: the first features come sooner, and the
                  # actors finish together (on 35 videos 17.7 s against 22.7 s with 8 a call; alike on 175)


class DecodeActor:
    """Ray Data stage: decode DECODE_BATCH videos a call in a one-process DecodePool (crash isolation as in a
    local run). The frames travel as arrays (Ray Data's object store holds them once), the rest of each Decoded
    pickled: pickling the frames too cost ~7 ms of copying a video on its way through Ray Data."""

    def __init__(self, config: DecoderConfig):
        self.pool = config.pool(workers=1)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = list(self.pool.imap(os.fsdecode(path) for path in batch["path"]))
        frames = np.empty(len(decoded), dtype=object)  # (n,) of (frames, h, w, 3) uint8, sizes differ
        for j, d in enumerate(decoded):
            frames[j] = d.frames if d.frames is not None else NO_FRAMES
        return {"i": batch["i"], "hash": batch["hash"], "frames": frames,
                "rest": np.array([pickle.dumps(replace(d, frames=None), protocol=5) for d in decoded], dtype=object)}

    def __del__(self):
        self.pool.close()


NO_FRAMES = np.zeros((0, 1, 1, 3), np.uint8)  # a failed video's frames on the way (its Decoded says None)


def decoded(batch: dict[str, np.ndarray]) -> list[Decoded]:
    """DecodeActor's output, back to Decoded videos."""
    rest = (pickle.loads(b) for b in batch["rest"])
    return [replace(d, frames=f if len(f) else None) for d, f in zip(rest, batch["frames"])]


class EmbedActor:
    """Ray Data stage: the backbone (on a GPU built from the index's record, so its weights digest is checked; on
    the CPU the driver's ONNX export of it), caching each decoded video's features; passes on what the driver
    needs (failures, timings) but no frames."""

    def __init__(self, spec: EmbedderSpec):
        self.embed = spec.build()
        self.where = {"device": str(self.embed.backbone.device), "runtime": self.embed.backbone.runtime}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.rows(batch, decoded(batch))

    def rows(self, batch: dict[str, np.ndarray], videos: list[Decoded]) -> dict[str, np.ndarray]:
        """Embed and cache ``batch``'s decoded ``videos``; what the driver gets of them."""
        reasons = [failure_reason(d) for d in videos]
        ok = [(d, digest) for d, digest, r in zip(videos, batch["hash"], reasons) if r is None]
        timing = self.embed(ok) if ok else {}
        n = len(videos)
        return {"i": batch["i"],
                # a reason may hold a file name that is not UTF-8 (a symlink's target): bytes, not str
                "error": np.array([(r or "").encode("utf-8", "surrogateescape") for r in reasons], dtype=object),
                "decode_s": np.array([d.seconds for d in videos]),
                "backbone_s": np.full(n, timing.get("backbone", 0.0) / n),
                "cache_s": np.full(n, timing.get("cache", 0.0) / n),
                "read_mode": np.array([d.read_mode or "" for d in videos]),
                "device": np.array([self.where["device"]] * n), "runtime": np.array([self.where["runtime"]] * n)}


class DecodeEmbedActor:
    """Ray Data stage on CPU nodes: decode a call's videos in a one-process DecodePool (crash isolation as in a
    local run), then embed and cache them here, as EmbedActor does."""

    def __init__(self, config: DecoderConfig, spec: EmbedderSpec):
        self.pool = config.pool(workers=1)
        # the backbone is built (imports, ONNX Runtime) while the first videos decode: a fault surfaces at the first call
        builder = ThreadPoolExecutor(1)
        self.embed = builder.submit(EmbedActor, spec)
        builder.shutdown(wait=False)  # its thread ends once the backbone is built

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        videos = list(self.pool.imap(os.fsdecode(path) for path in batch["path"]))
        return self.embed.result().rows(batch, videos)

    def __del__(self):
        self.pool.close()


SPLIT_ON_CPU = False  # True: the GPU layout (decoders -> embedders) on CPU actors too (tests run it so)


def actor_cpus(cpus: float, node_cpus: float, workers: int, embedders: int, split: bool) -> float:
    """Logical CPUs per decoding actor, on a cluster of ``cpus`` whose largest node has ``node_cpus``. Split: the
    ``embedders`` take one each, the ``workers`` decoders share the rest, at most one each (each decodes in a
    subprocess of its own). Else the ``workers`` actors share them all; Ray wants whole numbers above 1, and an
    actor asking more than a node has would never start."""
    share = (cpus - embedders) / workers if split else cpus / workers
    if split or share < 1:
        return max(0.1, min(1.0, share))
    return float(max(1, min(int(share), int(node_cpus))))


@contextmanager
def connected(opts: IndexOptions, run: Runner):
    """This process on the Ray cluster of ``opts.ray`` (see connect) for the length of a run; disconnected after
    if the run connected it (a cluster it started stops)."""
    with run.stage("ray (connect)"):
        ours = connect(opts.ray, opts.ray_cpus)
    try:
        yield
    finally:
        if ours:
            _ray().shutdown()


def extract_features_ray(todo: list[Pending], embed: Embedder, opts: IndexOptions, writer: Writer, run: Runner,
                         report) -> list[Pending]:
    """Decode and embed ``todo`` on the Ray cluster this process is connected to (`connected`; see the module
    docstring); returns the videos whose features are cached now, in ``todo``'s order. Failures are recorded by
    ``writer`` as they arrive. ``embed`` is the driver's Embedder: the actors build theirs from its backbone's
    record and index folder."""
    if not todo:
        return []
    from .embed import EmbedderSpec
    from .stages import progress_bar

    ray = _ray()
    cpus, gpus = ray.cluster_resources().get("CPU", 0.0), ray.cluster_resources().get("GPU", 0.0)
    if opts.device.startswith("cuda") and gpus < 1:
        raise BackboneError(f"--device {opts.device} with --ray: the Ray cluster has no GPU (resources: {cpus:g} CPU)")
    on_gpu = gpus >= 1 and opts.device != "cpu"
    split = on_gpu or SPLIT_ON_CPU
    embedders = int(gpus) if on_gpu else 1 if split else opts.workers
    node_cpus = max(n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"])
    per_actor = actor_cpus(cpus, node_cpus, opts.workers, embedders, split)
    report.backbone["ray"] = {"cpus": cpus, "gpus": gpus, "layout": "split" if split else "decode+embed",
                              "decoders": opts.workers, "embedders": embedders, "actor_cpus": per_actor,
                              "embedder_gpus": 1 if on_gpu else 0}
    backbone = embed.backbone
    decoder = DecoderConfig(backbone.preprocess.resize, opts.sampling, opts.timeout_s, _test_enabled("decoder"))
    import torch

    # CPU actors run the driver's ONNX export of the backbone (no timm, no weights to load: ~3 s sooner)
    onnx = None if on_gpu or backbone.onnx_file is None else backbone.onnx_file.read_bytes()
    threads = None if on_gpu else torch.get_num_threads() if split else max(1, int(per_actor))
    spec = EmbedderSpec(backbone.record.to_dict(), str(embed.idx.root), "cuda" if on_gpu else "cpu",
                        opts.runtime, opts.backbone_weights, threads, onnx)
    ctx = ray.data.DataContext.get_current()
    # videos come back as they are embedded (in input order, a long video would hold back the ones after
    # it); the driver puts them back in todo's order: the local run's, so the same clip ids
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = False  # the driver's own bar below
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    items = [{"i": i, "path": os.fsencode(p.file.path), "hash": p.content_hash or ""}
             for i, p in enumerate(todo)]
    if split:
        ds = (ray.data.from_items(items, override_num_blocks=-(-len(items) // DECODE_BATCH))
              .map_batches(DecodeActor, fn_constructor_kwargs={"config": decoder}, batch_size=DECODE_BATCH,
                           compute=ray.data.ActorPoolStrategy(size=opts.workers), num_cpus=per_actor)
              .map_batches(EmbedActor, fn_constructor_kwargs={"spec": spec},
                           batch_size=max(1, opts.batch_frames // opts.sampling.frames_per_clip),
                           compute=ray.data.ActorPoolStrategy(size=embedders), num_cpus=1, num_gpus=1 if on_gpu else 0))
    else:
        ds = (ray.data.from_items(items, override_num_blocks=-(-len(items) // FUSED_BATCH))
              .map_batches(DecodeEmbedActor, fn_constructor_kwargs={"config": decoder, "spec": spec},
                           batch_size=FUSED_BATCH, compute=ray.data.ActorPoolStrategy(size=opts.workers),
                           num_cpus=per_actor))
    ready, bar, first = [], progress_bar(len(todo), opts), True
    testpoint("decode-start")
    rows = iter(ds.iter_rows())
    while True:
        with run.stage("decode+embed (waiting)"):
            row = next(rows, None)
        if row is None:
            break
        if first:  # the run's start-up: the driver's, the actors' (imports, the backbone), the first videos
            run.add({"first features (start-up)": run.elapsed()})
            first = False
        p = todo[row["i"]]
        run.add({"decode (workers)": row["decode_s"], "backbone": row["backbone_s"], "cache": row["cache_s"]})
        if row["error"]:
            writer.fail(p.file, row["error"].decode("utf-8", "surrogateescape"))
        else:
            report.backbone.update(device=row["device"], runtime=row["runtime"])
            report.read_modes[row["read_mode"]] = report.read_modes.get(row["read_mode"], 0) + 1
            ready.append((row["i"], p))
            testpoint("feature-cached")
        bar.update(1)
    bar.close()
    return [p for _, p in sorted(ready, key=lambda r: r[0])]
