"""Helpers shared by the tests: small index options, synthetic libraries with bad files, and the checks
that compare two indexes (snapshot / differences) or a database with its vectors (agreement)."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from sqlalchemy import text

from db import Clip, Database, Setting, open_db
from db.location import new_schema
from db.session import TABLES
from indexer.library import IndexDir
from indexer.reconcile import disagreement
from indexer.store import VectorStore
from lift.config import IndexOptions, Sampling, TrainConfig

# the test session's local Ray cluster (tests/conftest.py ray_cluster) has no token authentication (Ray >= 2.5x
# turns it on for clusters that ray.init starts): a driver process joins it with this in its environment
RAY_TEST_ENV = {"RAY_AUTH_MODE": "disabled"}
SMALL_GROUPS = ["left_right", "up_down", "towards_away", "open_close"]


def small_options(**kw) -> IndexOptions:
    """Fast settings for tests: a small LiFT, a short training, one decoder process."""
    base = dict(backbone="efficientnet-lite0", lift="fit", workers=1, device="cpu",
                train=TrainConfig(latent_dim=64, epochs=15, progress=False), progress=False, sampling=Sampling())
    base.update(kw)
    return IndexOptions(**base)


def agreement(index: Path) -> tuple[int, int, int]:
    """(clips in db, vectors, disagreeing ids) — the last must be 0."""
    idx = IndexDir(index)
    sessions = open_db(idx.db)
    with sessions() as s:
        dim = s.get(Setting, "dim").value
        store = VectorStore.open(idx.vectors, dim, legacy=idx.legacy_vectors)
        missing, orphans = disagreement(s, store)
        n = s.query(Clip).count()
    return n, len(store), len(missing) + len(orphans)


def copy_library(src: Path, dst: Path, n: int | None = None) -> list[Path]:
    files = sorted(src.rglob("*.webm"))[:n]
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        shutil.copy2(f, dst / f.name)
        out.append(dst / f.name)
    return out


TEMP_PATTERNS = ("**/*.tmp", "**/*.tmp.npz", "**/incoming.safetensors", "**/*.part")


def make_library(root: Path, groups=("left_right", "up_down", "towards_away", "open_close", "rotate"),
                 crash: bool = True) -> Path:
    """len(groups) * 2 synthetic clips, plus an empty file, random bytes and (with the decoder hook on)
    a file whose decoder segfaults."""
    from indexer.synth import render_library

    clips = render_library(root, n_scenes_per_group=1, variants=1, groups=list(groups), seed=0, progress=False)
    (root / "labels.csv").unlink()
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "random.mp4").write_bytes(__import__("numpy").random.default_rng(0).bytes(20_000))
    if crash:
        shutil.copy(clips[0].path, bad / "x__segfault__.mp4")
    return root


def good_videos(root: Path, under: str = "") -> list[Path]:
    """The synthetic videos under `root` (or its folder `under`), whatever format synth writes: all
    files with a video extension outside bad/."""
    from indexer.scan import VIDEO_EXTENSIONS

    return sorted(p for p in (root / under).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                  and "bad" not in p.relative_to(root).parts)


RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "reliability.json"


def record(section: str, figures: dict, force: bool = False) -> None:
    """Merge `figures` into bench/results/reliability.json (slow tests always; others when
    LIFT_SEARCH_RECORD=1, so that a default test run leaves the tree alone); always print them."""
    print(json.dumps({section: figures}, indent=1, default=str))
    if not (force or os.environ.get("LIFT_SEARCH_RECORD")):
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**old, section: figures}, indent=1, default=str) + "\n")


def snapshot(index: Path) -> dict:
    """What an index holds, keyed so that two runs compare: (video path, start_s, end_s) -> vector, and
    every check of its soundness (vector ids == database ids, every vector file listed by the manifest and
    matching its checksum, no duplicates, no temp files, one model)."""
    from sqlalchemy import select

    from db import Clip, Failure, Video, open_db
    from db.session import all_settings
    from indexer.library import IndexDir
    from indexer.segments import MANIFEST, read_manifest, referenced
    from indexer.store import StoreError, VectorStore

    idx = IndexDir(index)
    sessions = open_db(idx.db)
    try:
        with sessions() as s:
            settings = all_settings(s)
            rows = s.execute(select(Clip.id, Video.path, Clip.start_s, Clip.end_s).join(Video)).all()
            failures = sorted(s.scalars(select(Failure.path)))
            videos = sorted(s.scalars(select(Video.path)))
    finally:
        sessions.kw["bind"].dispose()
    store = VectorStore.open(idx.vectors, settings["dim"], legacy=idx.legacy_vectors)
    ids = store.ids()
    problems = []
    try:
        store.verify()  # every file of the store matches the manifest's checksum
    except StoreError as e:
        problems.append(str(e))
    listed = referenced(read_manifest(idx.vectors)) | {MANIFEST}
    stray = sorted(f.name for f in idx.vectors.iterdir() if f.name not in listed) if idx.vectors.is_dir() else []
    if stray:
        problems.append(f"files in vectors/ the manifest does not list: {stray}")
    if len(ids) != len(set(ids.tolist())):
        problems.append("duplicate ids in the vector store")
    db_ids = {r[0] for r in rows}
    if set(ids.tolist()) != db_ids:
        problems.append(f"vector store and database disagree: {len(db_ids - set(ids.tolist()))} missing vectors, "
                        f"{len(set(ids.tolist()) - db_ids)} orphans")
    if store.meta.get("lift_hash") != settings["lift"]["hash"]:
        problems.append("vectors made by another LiFT than the index's")
    temp = sorted(str(p.relative_to(idx.root)) for pattern in TEMP_PATTERNS for p in idx.root.glob(pattern))
    if temp:
        problems.append(f"temp files left: {temp}")
    models = sorted(p.name for p in idx.models.iterdir())
    if models != [settings["lift"]["hash"] + ".safetensors"]:
        problems.append(f"models folder holds {models}")
    keys = [(path, round(a, 6), round(b, 6)) for _, path, a, b in rows]
    if len(set(keys)) != len(keys):
        problems.append("duplicate clips in the database")
    vectors = dict(zip(keys, store.vectors([r[0] for r in rows]))) if rows else {}
    return {"vectors": vectors, "failures": failures, "videos": videos, "model": settings["lift"]["hash"],
            "problems": problems, "clip_ids": sorted(db_ids), "clip_id_of": {k: r[0] for k, r in zip(keys, rows)}}


def copy_index(index: Path, to: Path) -> Path:
    """A copy of an index that is its own: the folder, and on PostgreSQL its schema (copied to a new
    schema, which the copy's metadata.json names; a plain folder copy would share the original's)."""
    shutil.copytree(index, to)
    old = IndexDir(index).db
    if old.backend == "postgresql":
        new = Database(old.url, new_schema(Path(to)))
        (Path(to) / "metadata.json").write_text(json.dumps(new.record()))
        sessions = open_db(new, write=True)  # creates the schema and its tables
        with sessions.begin() as s:
            for table in TABLES:
                s.execute(text(f'INSERT INTO {table} SELECT * FROM "{old.schema}".{table}'))
            for table in ("videos", "failures"):
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))
        sessions.kw["bind"].dispose()
    return Path(to)


def differences(ref: dict, got: dict, atol: float = 1e-5) -> list[str]:
    import numpy as np

    out = list(got["problems"])
    if set(ref["vectors"]) != set(got["vectors"]):
        out.append(f"clips differ: {len(set(ref['vectors']) - set(got['vectors']))} missing, "
                   f"{len(set(got['vectors']) - set(ref['vectors']))} extra")
    else:
        worst = max((float(np.abs(ref["vectors"][k] - got["vectors"][k]).max()) for k in ref["vectors"]), default=0)
        if worst > atol:
            out.append(f"vectors differ by up to {worst:.2e}")
    for key in ("failures", "videos", "model"):
        if ref[key] != got[key]:
            out.append(f"{key} differ: {ref[key]} != {got[key]}")
    return out


# ---- the Streamlit app (tests/test_ui.py and others) ------------------------------------------------
APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"
APP_TIMEOUT = 120  # the first run opens the index (imports torch, timm, faiss)


def app(index: Path, monkeypatch, **params):
    monkeypatch.setenv("LIFT_SEARCH_INDEX", str(index))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)  # undo ui.helpers.md escaping


def shown(at) -> str:
    """All text on the page."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "subheader", "header")
             for e in getattr(at, kind)]
    return plain("\n".join(str(p) for p in parts))


def no_crash(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def results(at) -> list[tuple[int, int, float]]:
    """(rank, clip id, score) of each result card, in rank order."""
    out = [tuple(m.groups()) for e in at.markdown
           if (m := re.fullmatch(r"\*\*#(\d+)\*\* · clip (\d+) · score \*\*(-?[\d.]+)\*\*", e.value))]
    return sorted((int(r), int(c), float(s)) for r, c, s in out)


def index_with_outside_link(root: Path, library: Path, small_index: Path, names: list, suffix: str,
                            corrupt: tuple = ()) -> Path:
    """root/idx: an index of root/videos holding copies of the library's first videos under `names` (bytes
    for a name that is not UTF-8), files of random bytes named `corrupt`, and link<suffix>, a symlink to a
    video outside the library (root/outside/secret<suffix>). Reuses small_index's LiFT: nothing is trained."""
    from indexer.pipeline import run_index
    lib, outside = root / "videos", root / "outside"
    lib.mkdir()
    outside.mkdir()
    src = sorted(library.rglob("*.webm"))
    for s, name in zip(src, names):
        shutil.copy(s, os.fsdecode(bytes(lib) + b"/" + name) if isinstance(name, bytes) else lib / name)
    for name in corrupt:
        (lib / name).write_bytes(os.urandom(6000))
    shutil.copy(src[len(names)], outside / f"secret{suffix}")
    (lib / f"link{suffix}").symlink_to(outside / f"secret{suffix}")
    model = next((small_index / "models").glob("*.safetensors"))
    run_index([lib], root / "idx", small_options(lift=str(model)))
    return root / "idx"
