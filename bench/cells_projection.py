"""Make lift/data's projection of efficientnet-lite0's stage-5 cells (112 channels) to a few channels, used by
the "global+cells" pooling (lift.backbones.LITE0_CELLS). Run once; the file ships with lift-search and its
digest is checked on load, so that every index and every query video projects its cells the same way.

    python bench/cells_projection.py --videos DIR --out lift/data/lite0_cells_112x32.npy

The matrix is the top principal directions (uncentred) of the cells of frames of real videos (none of the
synthetic benchmark's), in float32; its sha256 prefix goes into LITE0_CELLS.digest. The shipped file was made
from DIR = the three videos of /work/shared/videos (76198.webm, folding_paper.mp4, horsejump-high.mp4) and
vtest.avi, Megamind.avi and tree.avi of Debian's opencv-doc package (examples/data).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def stage_cells(backbone, frames: np.ndarray, stage: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N * cells, width): the cells of `stage`'s map, as the backbone sees the frames."""
    m = backbone.model
    out = []
    with torch.no_grad():
        for i in range(0, len(frames), 8):
            x = m.bn1(m.conv_stem(backbone.preprocess_frames(frames[i:i + 8])))
            for block in m.blocks[:stage + 1]:
                x = block(x)
            out.append(x.flatten(2).transpose(1, 2).reshape(-1, x.shape[1]))
    return torch.cat(out)


def read_frames(path: Path, most: int) -> np.ndarray:
    """Up to `most` frames spread over the video, RGB (OpenCV: it reads every format used here)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)[np.linspace(0, len(frames) - 1, min(most, len(frames))).astype(int)]


def main(argv=None) -> int:
    from lift.backbones import LITE0_CELLS, load_backbone

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", required=True, help="folder of real videos (every frame is used, up to 200 per video)")
    ap.add_argument("--out", default=str(ROOT / "lift" / "data" / LITE0_CELLS.projection))
    ap.add_argument("--channels", type=int, default=LITE0_CELLS.channels)
    a = ap.parse_args(argv)
    backbone = load_backbone("efficientnet-lite0", device="cpu", runtime="torch")
    cells = []
    for path in sorted(Path(a.videos).iterdir()):
        if path.suffix.lower() not in (".mp4", ".webm", ".avi", ".mov", ".mkv"):
            continue
        frames = read_frames(path, 200)
        cells.append(stage_cells(backbone, frames, LITE0_CELLS.stage))
        print(f"{path.name}: {len(frames)} frames", file=sys.stderr)
    x = torch.cat(cells).double()
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    proj = vt[:a.channels].T.float().numpy()                      # (width, channels), orthonormal columns
    proj *= np.sign(proj.sum(0, keepdims=True) + 1e-12)          # a fixed sign per column
    np.save(a.out, np.ascontiguousarray(proj, np.float32))
    share = float((s[:a.channels] ** 2).sum() / (s ** 2).sum())
    digest = hashlib.sha256(Path(a.out).read_bytes()).hexdigest()[:16]
    print(f"wrote {a.out}: {proj.shape}, {share:.1%} of the cells' energy, {len(x)} cells; digest {digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
