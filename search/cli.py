"""`lift-search`: a thin command line over the library API (one function per verb).

Defaults come from lift.config (no torch import: `--help` is instant). Errors a user can act on
(lift.errors.LiftSearchError) are printed as one line with exit status 2; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from lift.config import (ANN_MODES, API_KEY_ENV, CELLS_BACKBONES, DECODE_TIMEOUT_S, DEFAULT_BACKBONE,
                         MAX_UPLOAD_MB, MOTION_WEIGHT, OVERLAP_MODES, POOLINGS, SEARCH_K, IndexOptions, Sampling,
                         ServeOptions, StoreConfig, TrainConfig)
from lift.errors import IndexNotFoundError, LiftSearchError, UsageError

log = logging.getLogger("lift-search")

# the training options `lift-search train` and `lift-search index --lift fit` share: (flag, TrainConfig field, help)
TRAIN_OPTIONS = (
    ("--latent-dim", "latent_dim", "d of the LiFT: z_s and z_d each (the stored descriptor is 2d)"),
    ("--epochs", "epochs", "max training epochs (early stopping on a held-out split)"),
    ("--anchor", "anchor", "weight of the chord anchor, which ties z_d to the net change of the frames so that "
                           "it reads the same in every scene (0: the paper's loss alone)"),
    ("--motion-pin", "motion_pin", "weight of the pinned motion path: z_d also gets the frames' measured motion "
                                   "projected on the library's main directions, nothing learned, so it reads the "
                                   "same in scenes the LiFT never saw (docs/benchmarks.md, across scenes; 0: z_d "
                                   "is learned only)"),
    ("--seed", "seed", "seed of the initialisation and the batches"),
    ("--max-clips", "max_clips", "train on at most this many clips of the library (a seeded sample spread over its "
                                 "videos; `index --lift fit` only)"),
)


def add_train_options(sp: argparse.ArgumentParser) -> None:
    """The TRAIN_OPTIONS, with TrainConfig's defaults in their help; unset ones stay None (see train_config)."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    for flag, name, text in TRAIN_OPTIONS:
        sp.add_argument(flag, type=float if types[name] in (float, "float") else int,
                        help=f"{text} (default {getattr(TrainConfig, name):g})")


def train_config(a, **kw) -> tuple[TrainConfig, tuple[str, ...]]:
    """TrainConfig from the TRAIN_OPTIONS the user gave (the rest: TrainConfig's defaults), and their flags."""
    given = {name: getattr(a, name) for _, name, _ in TRAIN_OPTIONS if getattr(a, name) is not None}
    flags = tuple(flag for flag, name, _ in TRAIN_OPTIONS if name in given)
    return TrainConfig(**given, **kw), flags


def _print_hits(title: str, hits, as_json: bool) -> None:
    if as_json:
        print(json.dumps([h.to_dict() for h in hits], indent=1))
        return
    print(title)
    print(f"{'rank':>4}  {'score':>6}  {'static':>6}  {'motion':>6}  {'clip':>5}  {'start':>6}  {'end':>6}  video")
    for h in hits:
        print(f"{h.rank:>4}  {h.score:6.3f}  {h.static_score:6.3f}  {h.dynamic_score:6.3f}  {h.clip_id:>5}  "
              f"{h.start_s:6.2f}  {h.end_s:6.2f}  {h.video_path}")


def _write_json(res: dict, dest: str | None) -> None:
    if not dest:
        return
    text = json.dumps(res, indent=1)
    if dest == "-":
        print(text)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text + "\n")
        print(f"wrote {dest}", file=sys.stderr)


# ---- the verbs -----------------------------------------------------------------------------------
def cmd_index(a) -> int:
    """Index folders of videos (incremental, resumable).

    example: lift-search index ~/videos --index ~/videos.lift --backbone efficientnet-lite0 --lift fit
    """
    from indexer.pipeline import run_index

    train, given = train_config(a, progress=not a.json)
    opts = IndexOptions(backbone=a.backbone, backbone_weights=a.backbone_weights, lift=a.lift, refit=a.refit,
                        fit_options_given=given, device=a.device, workers=a.workers, timeout_s=a.timeout,
                        sampling=Sampling(window_s=a.window, stride_s=a.stride, max_single_s=a.max_single),
                        train=train, progress=not a.json, ann=a.ann, db=a.db, ray=a.ray, ray_cpus=a.ray_cpus,
                        pooling=a.pooling)
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
        if report.vectors.get("search"):
            from search.engine import search_summary

            print(f"  search: {search_summary(report.vectors['search'])}")
    return 0


def cmd_search(a) -> int:
    """Find clips like a video file or an indexed clip; --reverse finds the opposite action.

    example: lift-search search --index ~/videos.lift query.mp4 -k 5 --reverse --motion 0.7
    """
    from search import SearchEngine

    if (a.video is None) == (a.clip is None):
        raise UsageError("give either a VIDEO file or --clip ID")
    if a.clip is not None and (a.start is not None or a.end is not None):
        raise UsageError("--start/--end choose a segment of a query VIDEO; an indexed clip has its own span")
    engine = SearchEngine.open(a.index, device=a.device, backbone_weights=a.backbone_weights)
    kw = dict(k=a.k, reverse=a.reverse, motion=a.motion, within=a.within, overlap=a.overlap, exact=a.exact)
    if a.clip is not None:
        hits, query = engine.search_clip(a.clip, **kw), f"clip {a.clip}"
    else:
        hits = engine.search_video(a.video, start_s=a.start, end_s=a.end, **kw)
        span = f" [{a.start or 0:g} s, {'end' if a.end is None else f'{a.end:g} s'})" if a.start or a.end else ""
        query = a.video + span
    _print_hits(f"{'opposite of' if a.reverse else 'like'} {query} (motion weight {a.motion}):", hits, a.json)
    return 0


def cmd_status(a) -> int:
    """Counts of videos, clips and failures (with reasons), and the models of an index.

    example: lift-search status --index ~/videos.lift --json
    """
    from search import SearchEngine

    engine = SearchEngine.open(a.index)
    st = engine.status()
    if a.verify:
        engine.store.verify()  # raises StoreError (a clear one-line message) on a damaged file
        st["verified"] = True
    if a.json:
        print(json.dumps(st, indent=1, default=str))
        return 0
    print(f"index {st['index']}: {st['videos']} videos, {st['clips']} clips, {st['vectors']} vectors, "
          f"{st['failures']} failures, {st['disk_bytes'] / 1e6:.1f} MB")
    print(f"metadata in {st['metadata']}")
    rm = st["read_modes"]
    print(f"frames read by seeking: {rm['seek']} videos; in order: {rm['sequential']} (their seeks land on wrong "
          f"frames)" + (f"; not recorded: {rm['unknown']} (indexed by an older version)" if rm["unknown"] else ""))
    rec = st.get("backbone_record") or {}
    weights = (f"weights {rec['weights_digest']} from {rec['weights_source']}, pooling {rec.get('pooling', 'global')}"
               if rec else "weights not recorded")
    print(f"backbone {st['backbone']} ({weights}); LiFT {st['lift']['spec']} (d={st['lift']['latent_dim']}, "
          f"weights {st['lift']['hash']}); sampling {st['sampling']}; updated {st['updated_at']}")
    from search.engine import search_summary

    print(f"search: {search_summary(st['search'])}" + ("; every vector file checked" if a.verify else ""))
    for f in st["failure_reasons"]:
        print(f"  failed {f['path']}: {f['reason']}")
    return 0


def cmd_export(a) -> int:
    """Write every clip of an index to a Parquet file: clip_id, video_path, start_s, end_s, descriptor
    (the stored [m | dyn], a float32 list), and with --latents LiFT's z_s and z_d (computed again from the
    cached features: a LiFT pass per clip). Readable by pandas, polars, DuckDB.

    example: lift-search export --index ~/videos.lift --out clips.parquet
    """
    from search import SearchEngine
    from search.export import export_parquet

    n = export_parquet(SearchEngine.open(a.index), a.out, latents=a.latents)
    print(f"wrote {n} clips to {a.out}")
    return 0


def cmd_train(a) -> int:
    """Train a LiFT self-supervised on feature sequences (.npy/.npz arrays of shape (N, T, D)), with the
    same recipe as `lift-search index --lift fit`.

    example: lift-search train feats.npy --out model.safetensors --latent-dim 192
    """
    import numpy as np

    from lift.train import fit

    arrays = []
    for f in a.features:
        if not Path(f).is_file():
            raise UsageError(f"no feature file at {f}")
        try:
            data = np.load(f, allow_pickle=False)
        except ValueError as e:
            raise UsageError(f"{f} is not a .npy/.npz array file: {e}") from None
        arrays += [data[k] for k in data.files] if hasattr(data, "files") else [data]
    tc, _ = train_config(a, device=a.device)
    model, hist = fit(np.concatenate(arrays).astype(np.float32), tc=tc)
    model.save(a.out)
    print(f"trained on {model.config.provenance['sequences']} sequences, {len(hist['val_loss'])} epochs, "
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
    from indexer.library import IndexDir

    app = Path(__file__).resolve().parent.parent / "ui" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", a.host,
           "--server.port", str(a.port), "--server.headless", "true", "--server.enableXsrfProtection", "true",
           "--server.maxUploadSize", str(a.max_upload_mb), "--browser.gatherUsageStats", "false",
           "--", "--index", str(a.index)]
    if not IndexDir(a.index).exists():
        raise IndexNotFoundError(f"no lift-search index at {a.index}")
    os.execv(sys.executable, cmd)  # become the server: Ctrl-C and SIGTERM reach it directly


def cmd_serve(a) -> int:
    """Serve the index over HTTP for other programs (a JSON API; its docs at http://HOST:PORT/docs).

    Bound to 127.0.0.1 unless --host says otherwise; any other address needs an API key (--api-key or
    the LIFT_SEARCH_API_KEY environment variable), which every request must then send (X-API-Key header).

    example: lift-search serve --index ~/videos.lift --port 8600
    """
    from search.api import serve

    serve(a.index, ServeOptions(host=a.host, port=a.port, max_upload_mb=a.max_upload_mb), api_key=a.api_key)
    return 0


def cmd_eval_chiral(a) -> int:
    """The Chirality-in-Action protocol: a linear probe per chiral group, LiFT vs baselines.

    For each chiral group a RidgeClassifier (default alpha) is fitted on the train split's descriptors
    and scored on the test split; the mean over groups is reported for LiFT's descriptors and for the
    baselines (middle frame, mean pooling, first+last frames, concatenation of all T frames), all
    computed from the index's cached frame features.

    example: lift-search eval chiral --index lib.lift --labels lib/labels.csv --json probe.json
    """
    from search import evaluate as ev

    bench = ev.load_benchmark(a.index, a.labels, need_splits=True, device=a.device)
    res = ev.run_probe(bench)
    print(ev.format_probe(res, per_group=not a.quiet), file=sys.stderr if a.json == "-" else sys.stdout)
    _write_json(res, a.json)
    return 0


def cmd_eval_retrieval(a) -> int:
    """Chiral retrieval: does a clip find its own action, and does its reverse query find the opposite?

    Each labelled clip queries the others. Forward: the top result should be of the same group and
    class; reverse: the top result of a reverse query should be of the same group and the opposite
    class. Reports top-1 and precision@k for LiFT (through the search engine, over a motion-weight
    sweep) and for the baselines (exact cosine search; reverse query = descriptor of reversed frames).

    example: lift-search eval retrieval --index lib.lift --labels lib/labels.csv -k 5
    """
    from search import evaluate as ev

    weights = [float(w) for w in a.motion_weights.split(",") if w.strip()]
    bench = ev.load_benchmark(a.index, a.labels, need_splits=False, device=a.device)
    res = ev.run_retrieval(bench, k=a.k, weights=weights)
    print(ev.format_retrieval(res, per_group=not a.quiet), file=sys.stderr if a.json == "-" else sys.stdout)
    _write_json(res, a.json)
    return 0


def cmd_eval(a) -> int:
    """Evaluate an index on chiral (time-reversed) action pairs: `eval chiral`, `eval retrieval`."""
    raise UsageError("choose: lift-search eval chiral | lift-search eval retrieval")


# ---- the parser ----------------------------------------------------------------------------------
def _verb(sub, name: str, fn) -> argparse.ArgumentParser:
    sp = sub.add_parser(name, help=fn.__doc__.splitlines()[0], description=fn.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.set_defaults(fn=fn)
    return sp


def _add_eval(sub) -> None:
    from search.evaluate import CSV_HELP, MOTION_WEIGHTS

    sp = _verb(sub, "eval", cmd_eval)
    sp.epilog = CSV_HELP
    inner = sp.add_subparsers(dest="eval_cmd", required=True, metavar="{chiral,retrieval}")
    for name, fn in (("chiral", cmd_eval_chiral), ("retrieval", cmd_eval_retrieval)):
        p = _verb(inner, name, fn)
        p.epilog = CSV_HELP
        p.add_argument("--index", required=True, help="index folder (built by `lift-search index`)")
        p.add_argument("--labels", required=True, help="labels CSV (format below)")
        p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT ('-': stdout)")
        p.add_argument("--device", default="cpu", help="device for the LiFT model (cpu | cuda)")
        p.add_argument("-q", "--quiet", action="store_true", help="no per-group tables")
        if name == "retrieval":
            p.add_argument("-k", type=int, default=5, help="k of precision@k (default 5)")
            p.add_argument("--motion-weights", default=",".join(str(w) for w in MOTION_WEIGHTS),
                           help="comma-separated motion weights of the LiFT sweep (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lift-search", description="Time-aware video search with LiFT.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging; tracebacks for every error")
    sub = p.add_subparsers(dest="cmd", required=True)
    opts = IndexOptions()

    sp = _verb(sub, "index", cmd_index)
    sp.add_argument("dirs", nargs="+", help="folders of videos (scanned recursively)")
    sp.add_argument("--index", required=True, help="index folder (created if missing)")
    sp.add_argument("--db", metavar="URL",
                    help="where a new index keeps its metadata: a database URL such as postgresql://user@host:5432/"
                         "dbname (its own schema there; the password from PGPASSWORD or ~/.pgpass; recorded in the "
                         "index folder, so other commands need only --index). Default: the SQLite file IDX/index.db")
    sp.add_argument("--backbone", help=f"dinov2-vits14-reg (needs its weights), efficientnet-lite0 (offline), "
                                       f"timm:NAME (default: the index's own; {DEFAULT_BACKBONE} for a new index)")
    sp.add_argument("--backbone-weights", help="local weights file for the backbone (default: the index's recorded "
                                               "file, else the backbone's own weights)")
    sp.add_argument("--pooling", choices=POOLINGS,
                    help="features per frame: global (the pooled vector) or global+cells (plus a 14 x 14 map of the "
                         "frame, from which a fitted LiFT computes feature flow: it finds one action across "
                         f"scenes, docs/benchmarks.md; {', '.join(CELLS_BACKBONES)} only; about 6x the feature "
                         "storage). Default: the index's own; for a new index global+cells where the backbone has "
                         "it, else global")
    sp.add_argument("--lift", default=opts.lift,
                    help="official | fit | PATH (default %(default)s: official for DINOv2, else fit)")
    sp.add_argument("--refit", action="store_true", help="retrain the library's LiFT and re-describe all clips")
    add_train_options(sp)
    sp.add_argument("--window", type=float, default=Sampling.window_s,
                    help="clip window of long videos, seconds (default %(default)s)")
    sp.add_argument("--stride", type=float, default=Sampling.stride_s,
                    help="step between windows, seconds (default %(default)s)")
    sp.add_argument("--max-single", type=float, default=Sampling.max_single_s,
                    help="videos up to this long are one clip (default %(default)s)")
    sp.add_argument("--device", default=opts.device, help="auto | cpu | cuda (default %(default)s)")
    sp.add_argument("--workers", type=int, default=opts.workers, help="decoder processes (default %(default)s)")
    sp.add_argument("--timeout", type=float, default=DECODE_TIMEOUT_S,
                    help="seconds before a stuck decode is killed (default %(default)s)")
    sp.add_argument("--ray", nargs="?", const="auto", metavar="auto|ADDRESS",
                    help='decode and embed on a Ray cluster (pip install "lift-search[ray]"): auto (default when given '
                         'without a value) joins the cluster running on this machine or starts one; ADDRESS joins that '
                         'cluster (HOST:6379 or ray://HOST:10001). --workers is then the number of actors that decode (and, '
                         'without GPUs, embed: give a CPU cluster about one per CPU); the '
                         'index folder must be on a filesystem every node sees (docs/cluster.md)')
    sp.add_argument("--ray-cpus", type=int, help="CPUs of the local cluster that --ray auto starts (default: all)")
    sp.add_argument("--ann", choices=ANN_MODES,
                    help=f"vector search: auto (exact up to {StoreConfig.exact_max} clips, approximate IVF candidates "
                         f"re-scored exactly above), flat (always exact), ivf (always IVF) (default: the index's "
                         f"own; auto for a new index)")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON, no progress bars")

    sp = _verb(sub, "search", cmd_search)
    sp.add_argument("video", nargs="?", help="query video file")
    sp.add_argument("--clip", type=int, help="query by indexed clip id instead")
    sp.add_argument("--index", required=True)
    sp.add_argument("--start", type=float, help="query a segment of VIDEO from this second (default: its start)")
    sp.add_argument("--end", type=float, help="... to this second (default: its end); a VIDEO longer than the "
                                             "index's single-clip limit needs a segment")
    sp.add_argument("-k", type=int, default=SEARCH_K, help="how many hits (default %(default)s)")
    sp.add_argument("--reverse", action="store_true", help="find the temporally opposite action")
    sp.add_argument("--motion", type=float, default=MOTION_WEIGHT,
                    help="0: looks the same ... 1: moves the same (default %(default)s)")
    sp.add_argument("--within", action="append", metavar="DIR",
                    help="only clips of videos under this folder (repeatable: under any of them)")
    sp.add_argument("--overlap", choices=OVERLAP_MODES, default=OVERLAP_MODES[0],
                    help="distinct (default): windows of one video that overlap in time are one hit, the best; "
                         "keep: show every window")
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--backbone-weights", help="the index's backbone weights file, if it moved since indexing")
    sp.add_argument("--exact", action="store_true", help="brute force over every vector, even on a large index")
    sp.add_argument("--json", action="store_true")

    sp = _verb(sub, "status", cmd_status)
    sp.add_argument("--index", required=True)
    sp.add_argument("--verify", action="store_true", help="also check every vector file against its checksum")
    sp.add_argument("--json", action="store_true")

    sp = _verb(sub, "export", cmd_export)
    sp.add_argument("--index", required=True)
    sp.add_argument("--out", required=True, help="the Parquet file to write")
    sp.add_argument("--latents", action="store_true", help="also z_s and z_d (a LiFT pass per clip)")

    sp = _verb(sub, "train", cmd_train)
    sp.add_argument("features", nargs="+", help=".npy/.npz files of (N, T, D) feature sequences")
    sp.add_argument("--out", required=True, help="output .safetensors")
    add_train_options(sp)
    sp.add_argument("--device", default="auto")

    sp = _verb(sub, "demo", cmd_demo)
    sp.add_argument("--out", default="demo", help="folder for the demo library and its index")
    sp.add_argument("--scenes", type=int, default=2, help="scenes per chiral pair")
    sp.add_argument("--epochs", type=int, default=TrainConfig.epochs)

    sp = _verb(sub, "ui", cmd_ui)
    sp.add_argument("--index", required=True)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--max-upload-mb", type=int, default=MAX_UPLOAD_MB)

    serve = ServeOptions()
    sp = _verb(sub, "serve", cmd_serve)
    sp.add_argument("--index", required=True)
    sp.add_argument("--host", default=serve.host, help="address to bind (default %(default)s: this machine only)")
    sp.add_argument("--port", type=int, default=serve.port, help="(default %(default)s)")
    sp.add_argument("--api-key", help=f"key every request must send (default: ${API_KEY_ENV}; required "
                                      f"beyond loopback; prefer the variable: arguments show in `ps`)")
    sp.add_argument("--max-upload-mb", type=int, default=serve.max_upload_mb,
                    help="largest query video accepted (default %(default)s)")

    _add_eval(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # file names need not be valid UTF-8
        stream.reconfigure(errors="backslashreplace")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # faiss says at INFO which of its builds it tried ("No module named ...avx2")
        logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        return args.fn(args)
    except LiftSearchError as e:  # the user's to fix: one clear line; a bug keeps its traceback
        if args.verbose:
            raise
        print(f"lift-search {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lift-search {args.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
