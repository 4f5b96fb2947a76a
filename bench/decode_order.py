"""What reading in order costs: seconds per video with decord's seeking against decoding every frame in
order (what lift-search does for files whose seeks land on wrong frames), and what its per-file choice
costs on files that keep seeking.

    python bench/decode_order.py                  # ~8 min on 2 cores: opencv-doc footage + a 5 min AVI
    python bench/decode_order.py --minutes 1 --reps 2   # ~1 min

Each video is decoded with ``indexer.decode.decode_one`` three ways, alternately (the machine may be
shared): ``auto`` (what the indexer does: the per-file choice), ``seek`` and ``sequential`` (forced),
at the default sampling (16 frames per 4 s window, windows every 2 s) and shorter side 224, in this
process (no worker pool). Videos: opencv-doc's Megamind.avi (XviD with B-frames, no timestamps) and
vtest.avi (DivX 3, timestamps fine) when found (``--footage``, or bench/index_throughput.py
--fetch-footage), and generated here: a long timestamp-less AVI (``indexer.synth.write_untimed_avi``)
and an MP4 (mp4v) of the same frames. Each way's frames are compared with a plain in-order read
(decord's ``next()`` on every frame, outside lift-search's code). Prints a table and writes JSON
(default bench/results/decode_order.json).

With Megamind.avi found it also indexes it (``run_index``, efficientnet-lite0, a LiFT fitted on its
clips) and checks that the index holds the frames read in order: its cached thumbnails equal the
in-order frames' and its cached backbone features equal the backbone's on them (and differ from the
backbone's on the frames decord's seeking gives).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from indexer.decode import READ_MODES, decode_one  # noqa: E402
from indexer.synth import write_untimed_avi  # noqa: E402

log = logging.getLogger("bench")
FOOTAGE = [Path("/work/shared/videos"),
           Path(os.environ.get("LIFT_BENCH_FOOTAGE", Path.home() / ".cache" / "lift-search" / "footage"))]
SHORT_SIDE = 224
WAYS = ("auto", *READ_MODES)


def frames(n: int, w: int = 640, h: int = 480, seed: int = 0):
    """A smooth random texture panning 2 px a frame (moderate MPEG-4 bitrate), RGB."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (h, 2 * w + 2 * n % w, 3), np.uint8), (0, 0), 3)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)
    for i in range(n):
        x = (2 * i) % (tex.shape[1] - w)
        yield np.ascontiguousarray(tex[:, x:x + w])


def make_long(work: Path, minutes: float, fps: float = 25.0) -> list[Path]:
    n = int(minutes * 60 * fps)
    t = time.perf_counter()
    avi = write_untimed_avi(work / f"untimed_{minutes:g}min.avi", frames(n), fps)
    mp4 = work / f"mp4v_{minutes:g}min.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for f in frames(n):
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    log.info("wrote %d-frame AVI and MP4 in %.0f s", n, time.perf_counter() - t)
    return [avi, mp4]


def find(name: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        hits = sorted(Path(d).rglob(name)) if Path(d).is_dir() else []
        if hits:
            return hits[0]
    return None


def in_order(path: Path, indices: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frames at ``indices`` of a plain in-order read: decord's next() on every frame."""
    from decord import VideoReader, cpu

    vr = VideoReader(str(path), ctx=cpu(0), width=width, height=height, num_threads=1)
    want, out = set(indices.tolist()), []
    for i in range(int(indices[-1]) + 1):
        frame = vr.next()
        if i in want:
            out.append(frame.asnumpy())
    return np.stack(out)


def check_index(video: Path, work: Path) -> dict:
    """Index ``video`` and compare what the index holds with the frames read in order."""
    import shutil

    from db import Video, open_db
    from indexer.library import THUMB_HEIGHT, IndexDir, VideoFeatures
    from indexer.pipeline import run_index
    from lift import load_backbone
    from lift.config import IndexOptions, TrainConfig

    (work / "lib").mkdir()
    shutil.copy(video, work / "lib" / video.name)
    opts = IndexOptions(lift="fit", workers=1, train=TrainConfig(latent_dim=32, epochs=5, progress=False),
                        progress=False)
    report = run_index([work / "lib"], work / "idx", opts)
    idx = IndexDir(work / "idx")
    with open_db(idx.db)() as s:
        (row,) = s.query(Video).all()
        mode, vf = row.read_mode, VideoFeatures.load(idx.root / row.features)
    backbone = load_backbone(report.backbone["name"], device="cpu")
    d = decode_one(video, short_side=backbone.preprocess.resize, read_mode="seek")
    h, w = d.frames.shape[1:3]
    ref = in_order(video, vf.frame_indices, w, h)
    pos = {int(f): i for i, f in enumerate(vf.frame_indices)}
    thumbs = np.stack([cv2.resize(ref[pos[p.frame_indices[len(p.frame_indices) // 2]]],
                                  (vf.thumbs.shape[2], THUMB_HEIGHT), interpolation=cv2.INTER_AREA) for p in vf.plans])
    feats_ref, feats_seek = backbone.encode_frames(ref), backbone.encode_frames(d.frames)
    return {"video": video.name, "read_mode_recorded": mode, "report_read_modes": report.read_modes,
            "sampled": len(vf.frame_indices), "thumbs_equal_in_order": bool(np.array_equal(vf.thumbs, thumbs)),
            "features_max_diff_vs_in_order": float(np.abs(vf.feats - feats_ref).max()),
            "features_max_diff_vs_seeking": float(np.abs(vf.feats - feats_seek).max()),
            "seeking_frames_wrong": int(sum(not np.array_equal(a, b) for a, b in zip(d.frames, ref))),
            "seeking_mean_abs_diff": round(float(np.abs(d.frames.astype(np.int16) - ref).mean()), 1)}


def measure(path: Path, reps: int) -> dict:
    seconds = {w: [] for w in WAYS}
    results = {}
    for r in range(reps):
        for w in WAYS[r % 3:] + WAYS[:r % 3]:  # rotate the order
            t = time.perf_counter()
            d = decode_one(path, short_side=SHORT_SIDE, read_mode=None if w == "auto" else w)
            seconds[w].append(time.perf_counter() - t)
            assert d.error is None, (path, w, d.error)
            results[w] = d
    med = {w: statistics.median(s) for w, s in seconds.items()}
    info = results["auto"].info
    ref = in_order(path, results["auto"].frame_indices, *results["auto"].frames.shape[2:0:-1])
    right = {w: bool(np.array_equal(d.frames, ref)) for w, d in results.items()}
    return {"video": path.name, "frames": info.n_frames, "size": f"{info.width}x{info.height}",
            "seconds_of_video": round(info.duration_s, 1), "sampled": len(results["auto"].frame_indices),
            "chosen": results["auto"].read_mode,
            "frames_equal_in_order_read": right,
            "median_s": {w: round(v, 3) for w, v in med.items()},
            "sequential_over_seek": round(med["sequential"] / med["seek"], 2),
            "auto_over_seek": round(med["auto"] / med["seek"], 2), "runs_s": seconds}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="length of the generated videos (default 5)")
    ap.add_argument("--reps", type=int, default=3, help="runs of each way per video (default 3)")
    ap.add_argument("--footage", type=Path, action="append", default=[], help="folders to look for opencv-doc's "
                    f"Megamind.avi and vtest.avi in (also {', '.join(map(str, FOOTAGE))})")
    ap.add_argument("--no-index-check", action="store_true", help="skip indexing Megamind.avi")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "decode_order.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        videos = [p for name in ("Megamind.avi", "vtest.avi") if (p := find(name, [*args.footage, *FOOTAGE]))]
        if len(videos) < 2:
            log.warning("opencv-doc footage not found: run bench/index_throughput.py --fetch-footage or pass --footage")
        videos += make_long(Path(work), args.minutes)
        for v in videos:
            rows.append(measure(v, args.reps))
            log.info("%s: %s", v.name, rows[-1]["median_s"])
            assert all(r for w, r in rows[-1]["frames_equal_in_order_read"].items() if w != "seek"), rows[-1]
        megamind = next((v for v in videos if v.name == "Megamind.avi"), None)
        check = check_index(megamind, Path(work)) if megamind and not args.no_index_check else None
    print(f"\n{'video':<22}{'frames':>7}{'sampled':>8}  {'chosen':<11}{'seek right':<11}"
          f"{'seek s':>8}{'in order s':>11}{'auto s':>8}{'order/seek':>11}{'auto/seek':>10}")
    for r in rows:
        m = r["median_s"]
        seek_right = str(r["frames_equal_in_order_read"]["seek"])
        print(f"{r['video']:<22}{r['frames']:>7}{r['sampled']:>8}  {r['chosen']:<11}{seek_right:<11}"
              f"{m['seek']:>8.2f}{m['sequential']:>11.2f}{m['auto']:>8.2f}{r['sequential_over_seek']:>11.2f}"
              f"{r['auto_over_seek']:>10.2f}")
    if check:
        print(f"\nindexed {check['video']} (read {check['read_mode_recorded']}): thumbnails equal the in-order "
              f"frames' {check['thumbs_equal_in_order']}; features vs the backbone on the in-order frames: max diff "
              f"{check['features_max_diff_vs_in_order']:.1e}, vs on the frames seeking gives: "
              f"{check['features_max_diff_vs_seeking']:.2f} ({check['seeking_frames_wrong']} of {check['sampled']} "
              f"frames wrong, mean |diff| {check['seeking_mean_abs_diff']} of 255)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                       "load_avg_at_end": os.getloadavg()},
        "short_side": SHORT_SIDE, "reps": args.reps, "videos": rows, "index_check": check}, indent=1))
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
