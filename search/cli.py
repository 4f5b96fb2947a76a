"""`lift-search`: a thin command line over the library API (one function per verb)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from indexer import FIT_ANCHOR, FIT_EPOCHS

ANCHOR_HELP = ("weight of the chord anchor, which ties z_d to the net change of the frames so that "
               "it reads the same in every scene (default %(default)s; 0: the paper's loss)")

log = logging.getLogger("lift-search")


def _print_hits(title: str, hits, as_json: bool, labels: dict | None = None) -> None:
    if as_json:
        print(json.dumps([h.to_dict() for h in hits], indent=1))
        return
    print(title)
    print(f"{'rank':>4}  {'score':>6}  {'static':>6}  {'motion':>6}  {'clip':>5}  {'start':>6}  {'end':>6}  video")
    for h in hits:
        label = f"  [{labels[h.video_path]}]" if labels and h.video_path in labels else ""
        print(f"{h.rank:>4}  {h.score:6.3f}  {h.static_score:6.3f}  {h.dynamic_score:6.3f}  {h.clip_id:>5}  "
              f"{h.start_s:6.2f}  {h.end_s:6.2f}  {h.video_path}{label}")


def cmd_index(a) -> int:
    """Index folders of videos (incremental, resumable).

    example: lift-search index ~/videos --index ~/videos.lift --backbone efficientnet-lite0 --lift fit
    """
    from indexer.clips import Sampling
    from indexer.pipeline import IndexOptions, run_index
    from lift.train import TrainConfig

    given = tuple(f for f, v in (("--latent-dim", a.latent_dim), ("--epochs", a.epochs), ("--anchor", a.anchor))
                  if v is not None)
    opts = IndexOptions(backbone=a.backbone, backbone_weights=a.backbone_weights, lift=a.lift, refit=a.refit,
                        latent_dim=a.latent_dim or IndexOptions.latent_dim, fit_options_given=given, device=a.device,
                        workers=a.workers, timeout_s=a.timeout,
                        sampling=Sampling(window_s=a.window, stride_s=a.stride, max_single_s=a.max_single),
                        train=TrainConfig(epochs=a.epochs or FIT_EPOCHS,
                                          anchor=FIT_ANCHOR if a.anchor is None else a.anchor,
                                          progress=not a.json),
                        progress=not a.json)
    report = run_index(a.dirs, a.index, opts)
    if a.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"indexed {a.index}: {report.new} new, {report.changed} changed, {report.removed} removed, "
              f"{report.unchanged} unchanged, {report.failed} failed; {report.videos_total} videos, "
              f"{report.clips_total} clips in {report.seconds:.1f} s")
        for f in report.failures:
            print(f"  skipped {f['path']}: {f['reason']}")
        print("  stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.stages.items()))
    return 0


def cmd_search(a) -> int:
    """Find clips like a video file or an indexed clip; --reverse finds the opposite action.

    example: lift-search search --index ~/videos.lift query.mp4 -k 5 --reverse --motion 0.7
    """
    from search import SearchEngine

    if (a.video is None) == (a.clip is None):
        raise SystemExit("give either a VIDEO file or --clip ID")
    engine = SearchEngine.open(a.index, device=a.device)
    kw = dict(k=a.k, reverse=a.reverse, motion=a.motion)
    hits = engine.search_clip(a.clip, **kw) if a.clip is not None else engine.search_video(a.video, **kw)
    query = f"clip {a.clip}" if a.clip is not None else a.video
    _print_hits(f"{'opposite of' if a.reverse else 'like'} {query} (motion weight {a.motion}):", hits, a.json)
    return 0


def cmd_status(a) -> int:
    """Counts of videos, clips and failures (with reasons), and the models of an index.

    example: lift-search status --index ~/videos.lift --json
    """
    from search import SearchEngine

    st = SearchEngine.open(a.index).status()
    if a.json:
        print(json.dumps(st, indent=1, default=str))
        return 0
    print(f"index {st['index']}: {st['videos']} videos, {st['clips']} clips, {st['vectors']} vectors, "
          f"{st['failures']} failures, {st['disk_bytes'] / 1e6:.1f} MB")
    print(f"backbone {st['backbone']}; LiFT {st['lift']['spec']} (d={st['lift']['latent_dim']}, "
          f"weights {st['lift']['hash']}); sampling {st['sampling']}; updated {st['updated_at']}")
    for f in st["failure_reasons"]:
        print(f"  failed {f['path']}: {f['reason']}")
    return 0


def cmd_train(a) -> int:
    """Train a LiFT self-supervised on feature sequences (.npy/.npz arrays of shape (N, T, D)).

    example: lift-search train feats.npy --out model.safetensors --latent-dim 192 --epochs 300
    """
    import numpy as np

    from lift import LiftConfig
    from lift.train import TrainConfig, fit

    arrays = []
    for f in a.features:
        data = np.load(f, allow_pickle=False)
        arrays += [data[k] for k in data.files] if hasattr(data, "files") else [data]
    x = np.concatenate(arrays).astype(np.float32)
    cfg = LiftConfig(feature_dim=x.shape[-1], latent_dim=a.latent_dim, feature_norm=True)
    model, hist = fit(x, cfg, TrainConfig(epochs=a.epochs, device=a.device, seed=a.seed, anchor=a.anchor))
    model.save(a.out)
    print(f"trained on {len(x)} sequences, {len(hist['val_loss'])} epochs, "
          f"held-out loss {min(hist['val_loss']):.4f}; wrote {a.out}")
    return 0


def cmd_demo(a) -> int:
    """The offline quick start: render a chiral demo library, index it, and search it.

    example: lift-search demo --out demo
    """
    from search.demo import run_demo

    return run_demo(Path(a.out), a.scenes, a.epochs)


def cmd_ui(a) -> int:
    """Start the Streamlit app on an index (bound to 127.0.0.1 unless --host says otherwise).

    example: lift-search ui --index ~/videos.lift --port 8501
    """
    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", a.host,
           "--server.port", str(a.port), "--server.headless", "true", "--server.enableXsrfProtection", "true",
           "--server.maxUploadSize", str(a.max_upload_mb), "--browser.gatherUsageStats", "false",
           "--", "--index", str(a.index)]
    if not Path(a.index, "index.db").is_file():
        raise FileNotFoundError(f"no lift-search index at {a.index}")
    os.execv(sys.executable, cmd)  # become the server: Ctrl-C and SIGTERM reach it directly


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lift-search", description="Time-aware video search with LiFT.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    def verb(name, fn):
        sp = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn)
        return sp

    sp = verb("index", cmd_index)
    sp.add_argument("dirs", nargs="+", help="folders of videos (scanned recursively)")
    sp.add_argument("--index", required=True, help="index folder (created if missing)")
    sp.add_argument("--backbone", default="efficientnet-lite0",
                    help="dinov2-vits14-reg (needs its weights), efficientnet-lite0 (offline), timm:NAME")
    sp.add_argument("--backbone-weights", help="local weights file for the backbone")
    sp.add_argument("--lift", default="auto", help="official | fit | PATH (default: official for DINOv2, else fit)")
    sp.add_argument("--refit", action="store_true", help="retrain the library's LiFT and re-describe all clips")
    sp.add_argument("--latent-dim", type=int, help="d of a LiFT trained with --lift fit (default 192)")
    sp.add_argument("--epochs", type=int, help=f"max epochs of --lift fit (default {FIT_EPOCHS}; early stopping)")
    sp.add_argument("--anchor", type=float, help=ANCHOR_HELP.replace("%(default)s", f"{FIT_ANCHOR:g}"))
    sp.add_argument("--window", type=float, default=4.0, help="clip window of long videos, seconds")
    sp.add_argument("--stride", type=float, default=2.0, help="step between windows, seconds")
    sp.add_argument("--max-single", type=float, default=6.0, help="videos up to this long are one clip")
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda")
    sp.add_argument("--workers", type=int, default=2, help="decoder processes")
    sp.add_argument("--timeout", type=float, default=120.0, help="seconds before a stuck decode is killed")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON, no progress bars")

    sp = verb("search", cmd_search)
    sp.add_argument("video", nargs="?", help="query video file")
    sp.add_argument("--clip", type=int, help="query by indexed clip id instead")
    sp.add_argument("--index", required=True)
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--reverse", action="store_true", help="find the temporally opposite action")
    sp.add_argument("--motion", type=float, default=0.5, help="0: looks the same ... 1: moves the same")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--json", action="store_true")

    sp = verb("status", cmd_status)
    sp.add_argument("--index", required=True)
    sp.add_argument("--json", action="store_true")

    sp = verb("train", cmd_train)
    sp.add_argument("features", nargs="+", help=".npy/.npz files of (N, T, D) feature sequences")
    sp.add_argument("--out", required=True, help="output .safetensors")
    sp.add_argument("--latent-dim", type=int, default=192)
    sp.add_argument("--epochs", type=int, default=300)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--anchor", type=float, default=FIT_ANCHOR, help=ANCHOR_HELP)
    sp.add_argument("--device", default="auto")

    sp = verb("demo", cmd_demo)
    sp.add_argument("--out", default="demo", help="folder for the demo library and its index")
    sp.add_argument("--scenes", type=int, default=2, help="scenes per chiral pair")
    sp.add_argument("--epochs", type=int, default=FIT_EPOCHS)

    sp = verb("ui", cmd_ui)
    sp.add_argument("--index", required=True)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--max-upload-mb", type=int, default=200)

    from search.evaluate import add_eval_parser
    add_eval_parser(sub, verb)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # file names need not be valid UTF-8
        stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # clear one-line errors, no traceback
        if args.verbose:
            raise
        print(f"lift-search {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
