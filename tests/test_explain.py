"""search.explain: the 2-D projection, arrows and fit behind the UI's Explain page."""
from __future__ import annotations

import numpy as np
import pytest

from search import SearchEngine, SearchError
from search.explain import Trajectory, clip_trajectory, compare, explain_clip, project


def line(T=16, D=40, seed=0, noise=0.05, reverse=False):
    """A noisy straight trajectory and its exact straight line."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=D), rng.normal(size=D)
    t = np.linspace(0, 1, T)[:, None]
    clean = a + t * b
    x = clean + noise * rng.normal(size=(T, D))
    return (x[::-1], clean[::-1]) if reverse else (x, clean)


def test_trajectory_checks_shapes_and_times():
    x, r = line()
    tr = Trajectory.of(x, r, 2.0, 4.0, "c")
    assert tr.times[0] == 2.0 and tr.times[-1] == 4.0 and len(tr.times) == 16
    with pytest.raises(ValueError):
        Trajectory.of(x, r[:-1])
    with pytest.raises(ValueError):
        Trajectory.of(x[0], r[0])
    with pytest.raises(ValueError):
        project(Trajectory.of(x, r), Trajectory.of(x[:, :5], r[:, :5]))


def test_single_projection_runs_left_to_right_and_fits():
    x, r = line()
    exp = project(Trajectory.of(x, r, label="clip"))
    p = exp.trajectories[0]
    assert p.points.shape == p.line.shape == (16, 2) and p.arrow.shape == (2, 2)
    assert p.arrow[1, 0] > p.arrow[0, 0]                     # oriented left to right
    assert p.points[-1, 0] > p.points[0, 0]
    assert exp.explained[0] > 0.9 and exp.explained.sum() <= 1 + 1e-9  # a line: one main axis
    assert p.fit > 0.95                                      # the straight line explains it
    assert exp.arrow_cosine is None and not exp.opposite


def test_reversed_clip_points_the_opposite_way():
    fwd, rev = line(seed=1), line(seed=1, reverse=True)
    exp = compare(Trajectory.of(*fwd, label="q"), Trajectory.of(*rev, label="r"))
    assert exp.arrow_cosine == pytest.approx(-1.0, abs=1e-6) and exp.opposite
    assert exp.arrow_cosine_2d == pytest.approx(-1.0, abs=1e-6)
    q, r = exp.trajectories
    np.testing.assert_allclose(q.arrow, r.arrow[::-1], atol=1e-9)  # same plane, swapped ends
    same = compare(Trajectory.of(*fwd), Trajectory.of(*line(seed=1, noise=0.06)))
    assert same.arrow_cosine > 0.99 and not same.opposite


def test_still_clip_and_single_frame_do_not_break():
    still = np.ones((8, 6))
    exp = project(Trajectory.of(still, still))
    assert np.allclose(exp.trajectories[0].arrow, 0) and exp.trajectories[0].fit == 1.0
    one = project(Trajectory.of(np.ones((1, 6)), np.ones((1, 6))))
    assert one.trajectories[0].points.shape == (1, 2)


def test_on_a_real_index(small_index):
    engine = SearchEngine.open(small_index)
    by_name = {c.video_path.rsplit("/", 1)[-1]: c for c in engine.clips()}
    left, right = by_name["left_right-000_v0_left.webm"], by_name["left_right-000_v0_right.webm"]
    tr = clip_trajectory(engine, left.clip_id)
    assert tr.features.shape == tr.reconstruction.shape and tr.features.shape[0] == 16
    assert tr.times[0] == pytest.approx(left.start_s) and tr.times[-1] == pytest.approx(left.end_s)
    assert explain_clip(engine, left.clip_id).trajectories[0].label == f"clip {left.clip_id}"
    exp = compare(tr, clip_trajectory(engine, right.clip_id))  # frame-exact reversals of each other
    assert exp.arrow_cosine < -0.8
    with pytest.raises(SearchError):
        clip_trajectory(engine, 10**6)


def test_uploaded_query_features_match_search_video(small_library, small_index):
    """engine.video_features + search_features (the UI's upload path) == search_video."""
    library, _ = small_library
    video = sorted(library.rglob("*.webm"))[3]
    engine = SearchEngine.open(small_index)
    feats, recon = engine.video_features(video)
    cfg = engine.model.config  # the default pooling, "global+cells": LiFT rebuilds the pooled part only
    assert feats.shape == (len(recon), cfg.feature_dim) and recon.shape == (len(feats), cfg.global_dim)
    a = engine.search_video(video, k=5, reverse=True, motion=0.7)
    b = engine.search_features(feats, k=5, reverse=True, motion=0.7)
    assert [x.clip_id for x in a] == [x.clip_id for x in b]
    np.testing.assert_allclose([x.score for x in a], [x.score for x in b], atol=1e-5)
    np.testing.assert_allclose([x.dynamic_score for x in a], [x.dynamic_score for x in b], atol=1e-5)
