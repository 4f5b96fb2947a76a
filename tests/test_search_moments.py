"""Searching long videos the way users do: a segment as the query, distinct moments (overlapping windows of
one video are one hit), results within folders (exact, as many as asked)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer import synth
from indexer.pipeline import run_index
from lift.config import TrainConfig
from search import SearchEngine, SearchError
from search.engine import Hit, distinct_moments
from tests.helpers import app, no_crash, results, small_options

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def long_library(small_library, tmp_path_factory) -> tuple[Path, list[Path]]:
    """Four long videos (12-21 s at 12 fps) in two folders, each a different sequence of the small library's
    clips: their 4 s windows, every 2 s, overlap."""
    library, clips = small_library
    parts = [synth.read_video(c.path) for c in clips]
    root = tmp_path_factory.mktemp("long") / "videos"
    rng = np.random.default_rng(0)
    videos = []
    for i, folder in enumerate(["a", "a", "b", "b"]):
        order = rng.permutation(len(parts))[: 5 + i]
        videos.append(synth.write_video(root / folder / f"long{i}.webm", np.concatenate([parts[j] for j in order])))
    return root, videos


@pytest.fixture(scope="module")
def long_index(long_library, tmp_path_factory) -> Path:
    root, _ = long_library
    index = tmp_path_factory.mktemp("long-idx") / "idx"
    run_index([root], index, small_options(train=TrainConfig(latent_dim=32, epochs=10, progress=False)))
    return index


def overlapping(hits) -> list:
    return [(a.clip_id, b.clip_id) for i, a in enumerate(hits) for b in hits[i + 1:]
            if a.video_path == b.video_path and a.start_s < b.end_s - 1e-6 and b.start_s < a.end_s - 1e-6]


def test_a_segment_of_an_indexed_long_video_finds_its_own_window_first(long_index, long_library):
    _, videos = long_library
    engine = SearchEngine.open(long_index)
    for video, start in [(videos[0], 4.0), (videos[2], 2.0), (videos[3], 8.0)]:
        own = next(c for c in engine.clips() if c.video_path == str(video) and abs(c.start_s - start) < 1e-6)
        hits = engine.search_video(video, k=3, start_s=start, end_s=own.end_s)
        assert hits[0].clip_id == own.clip_id and hits[0].score > 0.99, (hits[0], own)


def test_the_cli_takes_a_segment_and_refuses_a_long_query_without_one(long_index, long_library):
    _, videos = long_library
    cli = [sys.executable, "-m", "search.cli", "search", "--index", str(long_index), str(videos[1])]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cli + ["--start", "2", "--end", "6", "-k", "2", "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    own = [h for h in hits if (h["video_path"], h["start_s"], h["end_s"]) == (str(videos[1]), 2.0, 6.0)]
    # first, or tied with the first: another long video can hold the same clip at the same time (equal vectors)
    assert own and own[0]["score"] == hits[0]["score"] > 0.99, hits
    out = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and "--start/--end" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(SearchError, match="0 <= start < end"):
        SearchEngine.open(long_index).search_video(videos[1], start_s=5, end_s=3)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("motion", [0.0, 0.5, 1.0])
def test_no_two_hits_overlap_in_one_video_unless_asked(long_index, reverse, motion):
    engine = SearchEngine.open(long_index)
    clips = engine.clips()
    kept_overlaps = 0
    for query in clips[::3]:
        hits = engine.search_clip(query.clip_id, k=8, reverse=reverse, motion=motion)
        assert not overlapping(hits), query
        assert not [h for h in hits if h.video_path == query.video_path and h.start_s < query.end_s - 1e-6
                    and query.start_s < h.end_s - 1e-6], "a hit shows the query's own moment"
        assert len(hits) == 8  # enough distinct moments exist: k of them are found
        kept_overlaps += len(overlapping(engine.search_clip(query.clip_id, k=8, reverse=reverse, motion=motion,
                                                            overlap="keep")))
    assert kept_overlaps > 0  # without the collapse, near-copies do fill the results


def test_distinct_moments_keeps_the_best_window_of_each_moment():
    def hit(i, start, score, video="v"):
        return Hit(i, video, start, start + 4, score)

    hits = [hit(1, 2, 0.9), hit(2, 0, 0.8), hit(3, 4, 0.7), hit(4, 6, 0.6), hit(5, 0, 0.5, "w")]
    assert [h.clip_id for h in distinct_moments(hits)] == [1, 4, 5]  # 2 and 3 overlap 1; 4 touches 1 only at 6 s


def test_within_returns_only_clips_under_the_folders_as_exact_search_does(long_index, long_library):
    root, _ = long_library
    engine = SearchEngine.open(long_index)
    under_a = [c for c in engine.clips() if Path(c.video_path).parent == root / "a"]
    query = next(c for c in engine.clips() if Path(c.video_path).parent == root / "b")
    for reverse, motion in [(False, 0.5), (True, 0.5), (False, 1.0)]:
        hits = engine.search_clip(query.clip_id, k=10, reverse=reverse, motion=motion, within=[root / "a"],
                                  overlap="keep")
        assert len(hits) == 10 and all(Path(h.video_path).parent == root / "a" for h in hits)
        # the same as brute force over the folder's clips
        d = engine.dim // 2
        q = engine.store.vectors([query.clip_id])[0]
        m, dyn = q[:d], (-q[d:] if reverse else q[d:])
        stored = engine.store.vectors([c.clip_id for c in under_a])
        exact = (1 - motion) * stored[:, :d] @ m + motion * stored[:, d:] @ dyn
        by_id = dict(zip([c.clip_id for c in under_a], exact))
        np.testing.assert_allclose([h.score for h in hits], [by_id[h.clip_id] for h in hits], atol=1e-5)
        np.testing.assert_allclose([h.score for h in hits], np.sort(exact)[::-1][:10], atol=1e-5)  # (ties:
        # windows made of the same source clip in two videos are the same clip, so ids may swap)
    both = engine.search_clip(query.clip_id, k=200, within=[root / "a", str(root / "b") + "/"], overlap="keep")
    assert len(both) == len(engine.clips()) - 1  # every other clip, when k asks for all
    with pytest.raises(SearchError, match="no indexed clip lies under"):
        engine.search_clip(query.clip_id, within=[root / "nowhere"])


def test_the_app_searches_with_a_segment_of_an_uploaded_long_video(long_index, long_library, monkeypatch):
    _, videos = long_library
    engine = SearchEngine.open(long_index)
    at = app(long_index, monkeypatch, page="Search")
    at.segmented_control(key="source").set_value("Upload a video").run()
    at.file_uploader(key="upload_file").set_value(("long.webm", videos[2].read_bytes(), "video/webm")).run()
    no_crash(at)
    slider = next(s for s in at.slider if s.label == "Segment (s)")
    assert slider.value == (0.0, 4.0)  # a long video: its first window by default
    for start in (0.0, 6.0):
        slider.set_value((start, start + 4)).run()
        no_crash(at)
        own = next(c.clip_id for c in engine.clips() if c.video_path == str(videos[2]) and c.start_s == start)
        _, top, score = results(at)[0]
        assert top == own and score > 0.99
