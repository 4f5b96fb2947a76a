"""The offline quick start: render a small chiral library, index it, search it, show the opposite action."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from indexer.pipeline import run_index
from indexer.synth import render_library
from lift.config import MOTION_WEIGHT, IndexOptions, TrainConfig

from .engine import SearchEngine

log = logging.getLogger(__name__)


def run_demo(out: Path, scenes: int = 2, epochs: int = TrainConfig.epochs) -> int:
    start = time.time()
    library, index = out / "library", out / "index"
    clips = render_library(library, n_scenes_per_group=scenes, variants=2, seed=0)
    label = {str(Path(c.path).absolute()): f"{c.group} / {c.cls} / {c.scene}" for c in clips}
    print(f"rendered {len(clips)} chiral clips in {library}")

    opts = IndexOptions(backbone="efficientnet-lite0", lift="fit", train=TrainConfig(epochs=epochs))
    report = run_index([library], index, opts)
    print(f"indexed {report.videos_total} videos ({report.clips_total} clips), {report.failed} failed, "
          f"in {report.seconds:.0f} s")

    engine = SearchEngine.open(index)
    query = next(c for c in engine.clips() if label[c.video_path].startswith("left_right / left"))
    print(f"\nquery: clip {query.clip_id}  {label[query.video_path]}  ({query.video_path})")
    for reverse in (False, True):
        title = "opposite action (--reverse)" if reverse else "same action"
        print(f"\n{title}:")
        for h in engine.search_clip(query.clip_id, k=5, reverse=reverse):
            print(f"  {h.rank}. score {h.score:.3f} (static {h.static_score:+.2f}, motion {h.dynamic_score:+.2f})"
                  f"  {label[h.video_path]}")

    fwd, rev = chiral_top1(engine, label)
    print(f"\nover all clips: top-1 is the same scene moving the same way {fwd:.1%}; the reverse query's "
          f"top-1 is the same scene moving the opposite way {rev:.1%}")
    print(f"done in {time.time() - start:.0f} s. Next: lift-search ui --index {index}")
    return 0


def chiral_top1(engine: SearchEngine, label: dict[str, str], motion: float = MOTION_WEIGHT) -> tuple[float, float]:
    """Fraction of clips whose forward top-1 (itself excluded) has the same 'group / class / scene' label,
    and whose reverse top-1 has the same group and scene but the other class."""
    fwd = rev = 0
    clips = engine.clips()
    for c in clips:
        group, cls, scene = label[c.video_path].split(" / ")
        top = engine.search_clip(c.clip_id, k=1, motion=motion)[0]
        opp = engine.search_clip(c.clip_id, k=1, reverse=True, motion=motion)[0]
        fwd += label[top.video_path] == label[c.video_path]
        g2, cls2, scene2 = label[opp.video_path].split(" / ")
        rev += (g2, scene2) == (group, scene) and cls2 != cls
    return fwd / len(clips), rev / len(clips)
