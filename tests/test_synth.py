"""Tests for the synthetic chiral video generator (indexer/synth.py)."""
from __future__ import annotations

import csv
import dataclasses
from collections import Counter, defaultdict

import cv2
import numpy as np
import pytest

from indexer import synth

W, H = 160, 120
LABELS = ["video", "group", "class", "split", "scene", "variant", "direction"]


def plain_scene(group: str, index: int = 0, **changes) -> synth.SceneParams:
    """A scene of `group` on a flat grey background, so the object is easy to segment."""
    scene = synth.make_scene(group, index)
    return dataclasses.replace(scene, background="plain", tint=(1.0, 1.0, 1.0), texture="flat", **changes)


def both(scene: synth.SceneParams, variant: int = 0) -> tuple[np.ndarray, np.ndarray]:
    first, second = synth.GROUPS[scene.group]
    return (synth.render_clip(scene.group, first, scene, variant),
            synth.render_clip(scene.group, second, scene, variant))


def object_mask(frames: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the plain background (grey 128)."""
    return np.abs(frames.astype(np.int16) - 128).sum(-1) > 60


def area(frames: np.ndarray) -> np.ndarray:
    return object_mask(frames).sum(axis=(1, 2))


def centroids(frames: np.ndarray) -> np.ndarray:
    out = []
    for m in object_mask(frames):
        ys, xs = np.nonzero(m)
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def flow_stats(frames: np.ndarray) -> tuple[float, float]:
    """Summed (mean horizontal flow, divergence) between consecutive frames (Farneback)."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    xs, ys = xs - xs.mean(), ys - ys.mean()
    dx_total = div_total = 0.0
    for a, b in zip(grey, grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        fx, fy = flow[..., 0] - flow[..., 0].mean(), flow[..., 1] - flow[..., 1].mean()
        dx_total += float(flow[..., 0].mean())
        div_total += float((fx * xs + fy * ys).sum() / (xs**2 + ys**2).sum())
    return dx_total, div_total


# --- every group --------------------------------------------------------------------------------

@pytest.mark.parametrize("group", list(synth.GROUPS))
@pytest.mark.parametrize("index", [0, 1])
def test_group_renders_both_classes_as_time_reversals(group: str, index: int) -> None:
    scene = synth.make_scene(group, index)
    a, b = both(scene, variant=index)
    n = len(synth.variant_progress(scene, index))
    assert 24 <= n <= 48  # 2-4 s at 12 fps
    for clip in (a, b):
        assert clip.dtype == np.uint8 and clip.shape == (n, H, W, 3)
    assert mad(a[0], a[-1]) > 0.5  # something happens
    # rendered independently, yet B is A played backwards
    assert mad(a[0], b[-1]) < 0.5 and mad(a[-1], b[0]) < 0.5
    assert mad(a, b[::-1]) < 0.5


def test_groups_have_distinct_classes() -> None:
    classes = [c for pair in synth.GROUPS.values() for c in pair]
    assert len(synth.GROUPS) >= 10 and len(set(classes)) == len(classes)


def test_render_clip_rejects_a_class_of_another_group() -> None:
    with pytest.raises(ValueError):
        synth.render_clip("left_right", "up", synth.make_scene("left_right", 0))


def test_size_fps_and_duration_are_configurable() -> None:
    scene = synth.make_scene("pan", 0)
    clip = synth.render_clip("pan", "pan_left", scene, 0, size=(64, 48), fps=8, duration=(1.0, 1.0))
    assert clip.shape == (8, 48, 64, 3)


def test_variants_differ() -> None:
    scene = synth.make_scene("left_right", 0)
    v0, v1 = (synth.render_clip("left_right", "left", scene, v) for v in (0, 1))
    assert v0.shape != v1.shape or mad(v0, v1) > 0.5


# --- direction of motion ------------------------------------------------------------------------

@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("group,axis", [("left_right", 0), ("up_down", 1)])
def test_translation_direction(group: str, axis: int, index: int) -> None:
    a, b = both(plain_scene(group, index))  # left / up, then right / down
    ca, cb = centroids(a), centroids(b)
    assert ca[-1, axis] - ca[0, axis] < -20
    assert cb[-1, axis] - cb[0, axis] > 20


@pytest.mark.parametrize("index", range(3))
def test_towards_grows_and_away_shrinks(index: int) -> None:
    towards, away = both(plain_scene("towards_away", index))
    assert area(towards)[-1] > 2 * area(towards)[0]
    assert area(away)[-1] < 0.5 * area(away)[0]
    assert centroids(towards)[-1, 1] > centroids(towards)[0, 1]  # perspective: comes down the ground


@pytest.mark.parametrize("style", ["fade", "wipe"])
def test_appear_and_disappear(style: str) -> None:
    appear, disappear = both(plain_scene("appear_disappear", style=style))
    assert area(appear)[0] < 0.2 * area(appear)[-1]
    assert area(disappear)[-1] < 0.2 * area(disappear)[0]


def test_mouth_opens_and_closes() -> None:
    opening, closing = both(plain_scene("open_close", style="mouth"))
    assert area(opening)[-1] < 0.9 * area(opening)[0]
    assert area(closing)[-1] > area(closing)[0] / 0.9


def test_door_opens_and_closes() -> None:
    opening, closing = both(plain_scene("open_close", style="door"))
    dark = (opening.max(axis=-1) < 30).sum(axis=(1, 2))  # the doorway behind the door
    assert dark[-1] > dark[0] + 200
    assert np.array_equal((closing.max(axis=-1) < 30).sum(axis=(1, 2)), dark[::-1])


def test_fill_rises_and_empty_falls() -> None:
    scene = plain_scene("fill_empty")
    fill, empty = both(scene)
    glass = 0.5 * 0.7 + 0.3 * np.array([0.9, 0.95, 1.0])
    liquid = 255 * (0.85 * np.array(scene.colour) + 0.15 * glass)
    wet = lambda clip: (np.abs(clip - liquid).sum(-1) < 30).sum(axis=(1, 2))  # noqa: E731
    assert wet(fill)[-1] > wet(fill)[0] + 300
    assert wet(empty)[-1] < wet(empty)[0] - 300


def test_more_and_fewer() -> None:
    more, fewer = both(plain_scene("more_fewer"))
    assert area(more)[-1] > 1.5 * area(more)[0]
    assert area(fewer)[-1] < area(fewer)[0] / 1.5


@pytest.mark.parametrize("index", range(2))
def test_rotation_direction(index: int) -> None:
    """Orientation from second moments; with y pointing down, clockwise on screen increases it."""
    def turned(clip: np.ndarray) -> float:
        thetas = []
        for m in object_mask(clip):
            mu = cv2.moments(m.astype(np.uint8), binaryImage=True)
            thetas.append(0.5 * np.arctan2(2 * mu["mu11"], mu["mu20"] - mu["mu02"]))
        steps = (np.diff(thetas) + np.pi / 2) % np.pi - np.pi / 2
        return float(np.degrees(steps.sum()))

    scene = plain_scene("rotate", index, shape="arrow")
    cw, ccw = both(scene)
    assert turned(cw) > 60 and turned(ccw) < -60


@pytest.mark.parametrize("index", range(2))
def test_zoom_in_expands_and_zoom_out_contracts(index: int) -> None:
    scene = dataclasses.replace(synth.make_scene("zoom", index), background="astronaut")
    zoom_in, zoom_out = both(scene)
    assert flow_stats(zoom_in)[1] > 0.2
    assert flow_stats(zoom_out)[1] < -0.2


@pytest.mark.parametrize("index", range(2))
def test_pan_left_moves_the_scene_right(index: int) -> None:
    scene = dataclasses.replace(synth.make_scene("pan", index), background="astronaut")
    pan_left, pan_right = both(scene)
    assert flow_stats(pan_left)[0] > 30
    assert flow_stats(pan_right)[0] < -30


# --- files --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[synth.SynthClip]]:
    root = tmp_path_factory.mktemp("library")
    return root, synth.render_library(root, n_scenes_per_group=3, variants=2, groups=["left_right", "zoom"],
                                      seed=0, progress=False)


def test_library_labels(library) -> None:
    root, clips = library
    with open(root / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == LABELS
    assert len(rows) == len(clips) == 2 * 3 * 2 * 2
    assert [c.row() for c in clips] == [{k: (int(v) if k == "variant" else v) for k, v in r.items()} for r in rows]
    per_scene_direction = Counter((r["scene"], r["direction"]) for r in rows)
    assert len(per_scene_direction) == 2 * 3 * 2 and min(per_scene_direction.values()) >= 2
    splits = defaultdict(set)
    for r in rows:
        assert r["class"] == synth.GROUPS[r["group"]][0 if r["direction"] == "forward" else 1]
        assert r["video"].startswith(r["group"] + "/") and r["video"].endswith(".webm")
        splits[r["scene"]].add(r["split"])
    assert all(len(s) == 1 for s in splits.values())  # split is per scene
    for group in ("left_right", "zoom"):
        assert {s for scene, (s,) in splits.items() if scene.startswith(group)} == {"train", "test"}
    assert [(c.video, c.path) for c in synth.read_labels(root)] == [(c.video, c.path) for c in clips]


def test_library_files_decode_with_decord(library) -> None:
    decord = pytest.importorskip("decord")
    root, clips = library
    for clip in clips:
        vr = decord.VideoReader(clip.path)
        assert len(vr) == clip.frames
        assert vr[0].shape == (H, W, 3)
        assert abs(vr.get_avg_fps() - 12) < 0.01
    clip = clips[0]
    scene = synth.make_scene(clip.group, int(clip.scene.rsplit("-", 1)[1]))
    rendered = synth.render_clip(clip.group, clip.cls, scene, clip.variant)
    assert mad(synth.read_video(clip.path), rendered) < 6  # only lossy compression in between


def test_write_reversed(library, tmp_path) -> None:
    pytest.importorskip("decord")
    _, clips = library
    forward, reverse = clips[0], clips[1]
    assert (forward.scene, forward.variant, forward.direction, reverse.direction) == \
        (reverse.scene, reverse.variant, "forward", "reverse")
    dst = synth.write_reversed(forward.path, tmp_path / "reversed.mp4")
    original, reversed_ = synth.read_video(forward.path), synth.read_video(dst)
    assert reversed_.shape == original.shape
    assert mad(reversed_, original[::-1]) < 4
    # and it looks like the independently rendered opposite class
    assert mad(reversed_, synth.read_video(reverse.path)) < 6


def test_determinism(tmp_path) -> None:
    assert synth.make_scene("rotate", 1, seed=3) == synth.make_scene("rotate", 1, seed=3)
    assert synth.make_scene("rotate", 1, seed=3) != synth.make_scene("rotate", 1, seed=4)
    scene = synth.make_scene("more_fewer", 1, seed=3)
    first = synth.render_clip("more_fewer", "more", scene, 1)
    synth.clear_caches()
    assert np.array_equal(first, synth.render_clip("more_fewer", "more", scene, 1))
    runs = [synth.render_library(tmp_path / str(i), 2, 2, ["open_close"], seed=5, progress=False) for i in (0, 1)]
    assert [dataclasses.replace(c, path="") for c in runs[0]] == [dataclasses.replace(c, path="") for c in runs[1]]
    assert (tmp_path / "0" / "labels.csv").read_text() == (tmp_path / "1" / "labels.csv").read_text()
    for a, b in zip(*runs):
        assert np.array_equal(synth.read_video(a.path), synth.read_video(b.path))
