"""Step 5: the sanity check on real footage. Every video of a folder is cut at four start/end points and
each cut is also written time-reversed (indexer.synth.write_reversed); the labels CSV makes one group per
video with the classes forward and reversed."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

DEFAULT_REAL_VIDEOS = Path("/work/shared/videos")  # where the report looks for real footage by default
REAL_CUTS = ((0.0, 1.0), (0.0, 0.75), (0.25, 1.0), (0.125, 0.875))  # (start, end) fractions; 0, 1 train
VIDEO_SUFFIXES = (".mp4", ".webm")


def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """All frames (RGB) with OpenCV, which reads every shared video (decord rejects most VP9 frames of
    76198.webm); cropped to even sizes for the mp4v writer."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1])
    cap.release()
    if not frames:
        raise SystemExit(f"{path}: OpenCV read no frames from it")
    x = np.stack(frames)
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return np.ascontiguousarray(x[:, :h, :w]), fps


def write_cuts(src: Path, out: Path) -> tuple[dict, list[dict]]:
    """The cuts of one video, forward and reversed, under out/<its stem>/: its description and label rows."""
    from indexer.synth import write_reversed, write_video

    frames, fps = read_frames(src)
    source = {"file": src.name, "frames": len(frames), "fps": fps, "size": list(frames.shape[1:3])}
    rows = []
    for v, (a, b) in enumerate(REAL_CUTS):
        cut = frames[int(round(a * len(frames))):int(round(b * len(frames)))]
        fwd = write_video(out / src.stem / f"cut{v}_forward.mp4", cut, fps)
        rev = write_reversed(fwd, out / src.stem / f"cut{v}_reversed.mp4", fps)  # its exact reversal
        for path, cls in ((fwd, "forward"), (rev, "reversed")):
            rows.append({"video": str(path.relative_to(out)), "group": src.stem, "class": cls,
                         "split": "train" if v < 2 else "test", "variant": v})
    return source, rows


def real_library(videos: Path, out: Path) -> dict:
    """The cut library of the videos in `videos` (.mp4, .webm), with its labels.csv, in `out` (made once)."""
    labels = out / "labels.csv"
    if labels.is_file():
        return json.loads((out / "params.json").read_text())
    rows, sources = [], []
    for src in sorted(videos.iterdir()):
        if src.suffix in VIDEO_SUFFIXES:
            source, cut_rows = write_cuts(src, out)
            sources.append(source)
            rows += cut_rows
    if not rows:
        raise SystemExit(f"no {' or '.join(VIDEO_SUFFIXES)} videos in {videos} for the real-footage check "
                         "(--real-videos DIR, or --no-real)")
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["video", "group", "class", "split", "variant"])
        w.writeheader()
        w.writerows(rows)
    info = {"sources": sources, "cuts": REAL_CUTS, "clips": len(rows)}
    (out / "params.json").write_text(json.dumps(info, indent=1))
    return info
