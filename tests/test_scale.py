"""What keeps a large library workable, on the small test index: paged library queries (no list of every
clip), the descriptor of a clip, the Parquet export, an approximate index on a real index (exact scores),
and `--lift fit`'s bounded training sample."""
from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from sqlalchemy import select

from db import Video, open_db
from indexer.library import IndexDir, VideoFeatures
from indexer.pipeline import library_sequences, run_index
from lift.config import MOTION_WEIGHT, TrainConfig
from search import SearchEngine
from search.cli import main
from tests.helpers import small_options


@pytest.mark.parametrize("which", ["small_index", "small_index_pg"])
def test_library_pages_counts_and_filters_agree_with_the_full_listing(which, request):
    engine = SearchEngine.open(request.getfixturevalue(which))
    every = engine.clips()
    assert engine.count() == len(every) == 16
    pages = [c for off in range(0, 16, 5) for c in engine.clip_page(off, 5, order="path")]
    assert pages == every and every == sorted(every, key=lambda c: (c.video_path, c.start_s))
    by_id = [c for off in range(0, 16, 5) for c in engine.clip_page(off, 5)]  # (the API's order)
    assert by_id == sorted(every, key=lambda c: c.clip_id)
    folders = engine.folders()
    parent = folders[0].rsplit("/", 1)[0]
    assert engine.count(within=[parent]) == 16 and engine.count(within=[folders[0]]) == 4
    assert engine.clip_page(0, 10, within=[folders[0]]) == engine.clip_page(0, 10, folder=folders[0], order="id")
    assert len(folders) == 4 and all(f.rsplit("/", 1)[-1] in c.video_path for f in folders for c in
                                     engine.clip_page(0, None, folder=f))
    for f in folders:
        assert engine.count(folder=f) == 4 == len(engine.clip_page(0, 10, folder=f))
    assert engine.count(folder=folders[0].rsplit("/", 1)[0]) == 0  # directly in the folder only
    assert engine.count(text="LEFT_") == 4 and engine.count(text="%") == 0 and engine.count(text="_") == 16
    lo, hi = engine.length_range()
    assert 0 < lo <= hi and engine.count(length=(lo, hi)) == 16 and engine.count(length=(hi + 1, hi + 2)) == 0


def test_descriptor_is_the_stored_vector(small_index):
    engine = SearchEngine.open(small_index)
    c = engine.clips()[3]
    d = engine.descriptor(c.clip_id)
    assert d.dtype == np.float32 and d.shape == (engine.dim,)
    np.testing.assert_allclose(np.linalg.norm(d[: engine.dim // 2]), 1, atol=1e-5)
    hit = engine.search_clip(engine.clips()[0].clip_id, k=16)
    best = next(h for h in hit if h.clip_id == c.clip_id)
    q = engine.descriptor(engine.clips()[0].clip_id)
    h = engine.dim // 2  # the score at the default motion weight, from the two halves
    assert best.score == pytest.approx(float((1 - MOTION_WEIGHT) * d[:h] @ q[:h] + MOTION_WEIGHT * d[h:] @ q[h:]), abs=1e-5)


def test_export_is_one_row_per_clip_readable_by_pandas_polars_duckdb(small_index, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "clips.parquet"
    assert main(["export", "--index", str(small_index), "--out", str(out), "--latents"]) == 0
    assert "wrote 16 clips" in capsys.readouterr().out
    engine = SearchEngine.open(small_index)
    df = pd.read_parquet(out)
    assert list(df.columns) == ["clip_id", "video_path", "start_s", "end_s", "descriptor", "z_s", "z_d"]
    assert len(df) == 16 and sorted(df.clip_id) == sorted(c.clip_id for c in engine.clips())
    row = df.iloc[5]
    np.testing.assert_array_equal(np.asarray(row.descriptor, np.float32), engine.descriptor(int(row.clip_id)))
    clip = engine.clip(int(row.clip_id))
    assert (row.video_path, row.start_s, row.end_s) == (clip.video_path, clip.start_s, clip.end_s)
    seq, _ = engine.clip_features(int(row.clip_id))
    z_s, z_d = engine.model.encode(seq[None])
    np.testing.assert_allclose(row.z_s, z_s[0].detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(row.z_d, z_d[0].detach().numpy(), atol=1e-5)
    try:
        import polars as pl
    except ImportError:
        pl = None
    if pl is not None:
        frame = pl.read_parquet(out)
        assert frame.height == 16 and frame["descriptor"].list.len().to_list() == [engine.dim] * 16
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if duckdb is not None:
        n, dim = duckdb.sql(f"SELECT count(*), max(len(descriptor)) FROM '{out}'").fetchall()[0]
        assert (n, dim) == (16, engine.dim)
    if pl is None or duckdb is None:
        pytest.skip("polars or duckdb not installed: read with pandas only")


def test_a_forced_approximate_index_serves_exact_scores(small_library, small_index, tmp_path):
    """--ann ivf on a real (small) index: the same results as --exact, with the same exact scores; status
    says which index serves."""
    library, _ = small_library
    model = next((small_index / "models").glob("*.safetensors"))
    index = tmp_path / "idx"
    report = run_index([library], index, small_options(lift=str(model), ann="ivf"))
    assert report.vectors["search"]["search"] == "ivf"
    engine = SearchEngine.open(index)
    assert engine.status()["search"]["index"].startswith("IVF")
    for c in engine.clips()[:4]:
        for reverse, motion in [(False, 0.5), (True, 0.5), (False, 0.25), (True, 0.75)]:
            approx = engine.search_clip(c.clip_id, k=5, reverse=reverse, motion=motion)
            exact = engine.search_clip(c.clip_id, k=5, reverse=reverse, motion=motion, exact=True)
            assert [(h.clip_id, round(h.score, 5)) for h in approx] == [(h.clip_id, round(h.score, 5)) for h in exact]
    report = run_index([library], index, small_options(lift=str(model), ann="flat"))  # and back
    assert report.vectors["search"]["search"] == "exact" and SearchEngine.open(index).store.kind == "exact"


def test_fit_trains_on_a_bounded_sample_spread_over_videos(small_library, small_index, tmp_path):
    idx = IndexDir(small_index)
    sessions = open_db(idx.db)
    every = library_sequences(idx, sessions, [])
    assert len(every) == 16
    sample = library_sequences(idx, sessions, [], max_clips=6, seed=3)
    assert sample.shape == (6, *every.shape[1:])
    rows = [int(np.flatnonzero((every == s).all(axis=(1, 2)))[0]) for s in sample]
    assert len(set(rows)) == 6  # distinct clips ...
    np.testing.assert_array_equal(sample, library_sequences(idx, sessions, [], max_clips=6, seed=3))  # seeded
    tracemalloc.start()
    library_sequences(idx, sessions, [], max_clips=2)
    small_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    library_sequences(idx, sessions, [])
    full_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    one = every[0].nbytes
    assert small_peak < full_peak and small_peak <= 2 * one + 2 * every.shape[2] * 4 * 64  # 2 clips + one video's file
    # --lift fit with a cap: trains on that many clips
    library, _ = small_library
    report = run_index([library], tmp_path / "idx", small_options(
        train=TrainConfig(latent_dim=16, epochs=2, max_clips=5, progress=False)))
    assert report.lift["provenance"]["sequences"] == 5 and report.clips_total == 16


def test_status_says_which_index_serves_and_verifies_every_vector_file(small_index, capsys):
    assert main(["status", "--index", str(small_index), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "search: exact (brute force), 16 vectors" in out and "every vector file checked" in out
    assert main(["search", "--index", str(small_index), "--clip", "1", "--exact", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_fit_sequences_follow_the_videos_paths_not_their_feature_files(small_index):
    """A LiFT trained on a library does not depend on its feature files' names (content hashes: a WebM
    written twice from the same frames differs in a random container id): sequences come in path order."""
    idx = IndexDir(small_index)
    sessions = open_db(idx.db)
    with sessions() as s:
        videos = sorted(s.execute(select(Video.path, Video.features)).all())
    assert [f for _, f in videos] != sorted(f for _, f in videos)  # the two orders differ on this library
    expected = np.concatenate([VideoFeatures.load(idx.root / f).clip_sequences() for _, f in videos])
    np.testing.assert_array_equal(library_sequences(idx, sessions, []), expected)
