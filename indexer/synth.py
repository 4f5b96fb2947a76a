"""Synthetic *chiral* videos: pairs of actions that are exact time reversals of each other.

A frame is a pure function of a scene and a progress value p in [0, 1].  Class A of a group
plays a variant's p curve forwards, class B the same curve backwards, so the two clips of a
(scene, variant) are frame-exact time reversals although each is rendered on its own: only
the order of frames tells them apart.  ``pan_left`` means the camera turns left (the scene
slides right); ``clockwise`` is as seen on screen.  Backgrounds are crops of the photos
bundled with scikit-image (no downloads) and two procedural textures.  Files are VP8 .webm, which
decord reads and browsers play (opencv's wheel has no H.264 encoder, and browsers do not play its
'mp4v' MPEG-4 Part 2).

    clips = render_library("demo-library", n_scenes_per_group=3)   # .webm files + labels.csv
    frames = render_clip("rotate", "clockwise", make_scene("rotate", 0), variant=1)
"""
from __future__ import annotations

import argparse
import csv
import itertools
import logging
import os
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

GROUPS: dict[str, tuple[str, str]] = {  # group -> (class A, class B = A reversed in time)
    "left_right": ("left", "right"), "up_down": ("up", "down"), "towards_away": ("towards", "away"),
    "appear_disappear": ("appear", "disappear"), "open_close": ("open", "close"),
    "fill_empty": ("fill", "empty"), "rotate": ("clockwise", "counterclockwise"),
    "more_fewer": ("more", "fewer"), "zoom": ("zoom_in", "zoom_out"), "pan": ("pan_left", "pan_right"),
}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "retina", "motorcycle", "brick", "grass", "gravel", "moon")
GREY = ("brick", "grass", "gravel", "moon")  # tinted more strongly
PROCEDURAL = ("clouds", "tiles")
SHAPES = ("disc", "square", "triangle", "star", "glyph", "patch", "arrow")
ASYMMETRIC = ("triangle", "glyph", "patch", "arrow")  # rotation must be visible
TEXTURES = ("flat", "stripes", "checker", "photo")
STYLES = {"appear_disappear": ("fade", "wipe"), "open_close": ("door", "lid", "mouth")}
AMOUNT = {"towards_away": (2.5, 4.0), "rotate": (120.0, 300.0), "more_fewer": (3.0, 6.99),
          "zoom": (1.6, 2.4), "pan": (0.5, 1.0)}
EASINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda u: u,
    "smooth": lambda u: u * u * (3 - 2 * u),
    "ease_in": lambda u: u * u,  # reversed, this is ease_out: both classes see both
    "ease_out": lambda u: 1 - (1 - u) ** 2,
}
LABEL_COLUMNS = ("video", "group", "class", "split", "scene", "variant", "direction")
FOURCCS = {".webm": "VP80", ".mp4": "mp4v", ".avi": "MJPG"}  # by file extension; the library uses .webm
SPRITE = 96  # object sprites are drawn at this resolution, then warped into the frame
TEST_FRACTION = 0.3
Size = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class SceneParams:
    """Everything that defines a scene; a frame is a pure function of this and p."""

    group: str
    scene_id: str
    seed: int
    background: str
    crop: tuple[float, float, float]  # (u, v, frac): position and size of the background crop
    tint: tuple[float, float, float]
    shape: str
    colour: tuple[float, float, float]  # RGB in [0, 1]
    texture: str
    patch: tuple[str, float, float]  # photo and position for the "photo" texture
    size: float  # object size as a fraction of the frame height
    start: tuple[float, float]  # normalised (x, y) at p = 0
    end: tuple[float, float]  # normalised (x, y) at p = 1
    arc: float  # bulge of the path, as a fraction of the frame
    style: str
    amount: float  # growth, degrees, object count, zoom factor or pan width, by group


@dataclass(frozen=True)
class SynthClip:
    """One rendered clip, as in a row of labels.csv plus its absolute path and length."""

    video: str  # path relative to the library root
    group: str
    cls: str  # the "class" column
    split: str  # "train" | "test", assigned per scene
    scene: str
    variant: int
    direction: str  # "forward" = first class of the group, "reverse" = its time reversal
    path: str
    frames: int

    def row(self) -> dict[str, str | int]:
        return dict(zip(LABEL_COLUMNS, astuple(self)[:7]))


def _floats(*xs: float) -> tuple[float, ...]:
    return tuple(float(x) for x in xs)


def make_scene(group: str, index: int, seed: int = 0) -> SceneParams:
    """Scene number `index` of `group`, drawn deterministically from `seed`."""
    if group not in GROUPS:
        raise KeyError(f"unknown group {group!r}; known: {', '.join(GROUPS)}")
    rng = np.random.default_rng([seed, zlib.crc32(group.encode()), index])
    bg = str(rng.choice(PHOTOS + PROCEDURAL))
    hsv = np.uint8([[[rng.integers(180), rng.integers(150, 256), rng.integers(170, 256)]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    near, far = rng.uniform(0.15, 0.3), rng.uniform(0.7, 0.85)
    across, drift = rng.uniform(0.35, 0.65), rng.uniform(-0.1, 0.1)
    if group == "left_right":  # class A moves left
        start, end = (far, across), (near, across + drift)
    elif group == "up_down":  # class A moves up
        start, end = (across, far), (across + drift, near)
    elif group == "towards_away":  # from near the horizon down towards the camera
        start, end = (across, rng.uniform(0.35, 0.45)), (across + drift, rng.uniform(0.6, 0.7))
    else:
        start = end = (across, rng.uniform(0.4, 0.6))
    lo, hi = AMOUNT.get(group, (1.0, 1.0))
    return SceneParams(
        group=group, scene_id=f"{group}-{index:03d}", seed=int(rng.integers(2**31)), background=bg,
        crop=_floats(rng.random(), rng.random(), rng.uniform(0.45, 0.9)),
        tint=_floats(*rng.uniform(0.7, 1.2, 3) if bg in GREY else rng.uniform(0.88, 1.12, 3)),
        shape=str(rng.choice(ASYMMETRIC if group == "rotate" else SHAPES)), colour=_floats(*colour),
        texture=str(rng.choice(TEXTURES)),
        patch=(str(rng.choice([p for p in PHOTOS if p not in GREY and p != bg])), *_floats(*rng.random(2))),
        size=float(rng.uniform(0.25, 0.4)), start=_floats(*start), end=_floats(*end),
        arc=float(rng.uniform(-0.12, 0.12)) if group in ("left_right", "up_down") else 0.0,
        style=str(rng.choice(STYLES.get(group, ("plain",)))), amount=float(rng.uniform(lo, hi)))


def variant_progress(scene: SceneParams, variant: int, fps: float = 12,
                     duration: tuple[float, float] = (2.0, 4.0)) -> np.ndarray:
    """Class A's progress per frame for a variant: its own duration, easing, start/end offset and holds."""
    rng = np.random.default_rng([scene.seed, variant, 17])
    n = max(6, int(round(rng.uniform(*duration) * fps)))
    hold = rng.integers(0, n // 8 + 1, size=2)
    ease = EASINGS[str(rng.choice(list(EASINGS)))]
    p0, p1 = rng.uniform(0.0, 0.2), rng.uniform(0.8, 1.0)
    p = np.concatenate([np.zeros(hold[0]), ease(np.linspace(0, 1, n - hold.sum())), np.ones(hold[1])])
    return p0 + (p1 - p0) * p


# --- images -------------------------------------------------------------------------------------

def clear_caches() -> None:
    """Forget every cached image (sources, backgrounds, textures, sprites): rendering again must give the
    same frames (tests/test_synth.py checks that nothing depends on the caches)."""
    for cached in (_source, _background, _texture, _sprite):
        cached.cache_clear()


@lru_cache(maxsize=None)
def _source(name: str) -> np.ndarray:
    """A background or patch source, float32 RGB in [0, 1]; only photos bundled with skimage."""
    if name == "plain":  # flat grey, handy for tests
        return np.full((240, 320, 3), 0.5, np.float32)
    if name in PROCEDURAL:
        return _procedural(name)
    from skimage import data
    img = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3].astype(np.float32) / 255.0


def _procedural(name: str, n: int = 512) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    noise = sum(cv2.resize(rng.random((s, s), dtype=np.float32), (n, n), interpolation=cv2.INTER_CUBIC) * 4 / s
                for s in (4, 8, 16, 32, 64))
    noise = ((noise - noise.min()) / np.ptp(noise))[..., None]
    if name == "clouds":
        sky, cloud = np.float32([0.35, 0.55, 0.85]), np.float32([0.97, 0.97, 0.99])
        return sky + (cloud - sky) * noise**1.5
    img = np.empty((n, n, 3), np.float32)
    img[:] = (0.55, 0.55, 0.5)  # mortar, then a brick wall
    for row, y in enumerate(range(0, n, 32)):
        for x in range(-(row % 2) * 32, n, 64):
            img[y + 2:y + 30, max(x + 2, 0):x + 62] = np.float32([0.62, 0.3, 0.22]) * rng.uniform(0.8, 1.15)
    return img * (0.85 + 0.3 * noise)


@lru_cache(maxsize=128)
def _background(scene: SceneParams, w: int, h: int) -> np.ndarray:
    src = _source(scene.background)
    ph, pw = src.shape[:2]
    u, v, frac = scene.crop
    bw = min(pw, ph * w / h) * frac
    bh = bw * h / w
    x0, y0 = int(u * (pw - bw)), int(v * (ph - bh))
    crop = src[y0:y0 + int(bh), x0:x0 + int(bw)]
    img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if bw > w else cv2.INTER_CUBIC)
    img = np.clip(img * np.float32(scene.tint), 0, 1)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=128)
def _texture(scene: SceneParams) -> np.ndarray:
    """The object's surface, (SPRITE, SPRITE, 3) float32: colour x pattern, or a photo patch."""
    if scene.texture == "photo" or scene.shape == "patch":
        name, u, v = scene.patch
        src = _source(name)
        side = min(src.shape[:2]) // 3
        y0, x0 = int(v * (src.shape[0] - side)), int(u * (src.shape[1] - side))
        return cv2.resize(src[y0:y0 + side, x0:x0 + side], (SPRITE, SPRITE), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:SPRITE, 0:SPRITE].astype(np.float32)
    pattern = {"stripes": 0.75 + 0.25 * np.sign(np.sin((xx + yy) / 5)),
               "checker": 0.7 + 0.3 * ((xx // 16 + yy // 16) % 2)}.get(scene.texture, 1.0)
    return np.float32(scene.colour) * (pattern * (1.1 - 0.3 * yy / SPRITE))[..., None]


def _shape_mask(shape: str, seed: int, n: int = SPRITE) -> np.ndarray:
    m = np.zeros((n, n), np.uint8)
    polys = {"square": [(.08, .08), (.92, .08), (.92, .92), (.08, .92)],
             "patch": [(.03, .03), (.97, .03), (.97, .97), (.03, .97)],
             "triangle": [(.06, .9), (.95, .8), (.3, .08)],  # scalene
             "arrow": [(.05, .38), (.6, .38), (.6, .18), (.95, .5), (.6, .82), (.6, .62), (.05, .62)]}
    if shape == "star":
        ang = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2, 0.2, 0.48)
        polys["star"] = list(zip(0.5 + r * np.cos(ang), 0.52 + r * np.sin(ang)))
    if shape == "disc":
        cv2.circle(m, (n * 8, n * 8), int(n * 0.46 * 16), 255, -1, cv2.LINE_AA, shift=4)
    elif shape == "glyph":
        letter = "FGJKLPRZ4?"[seed % 10]
        (tw, th), base = cv2.getTextSize(letter, cv2.FONT_HERSHEY_DUPLEX, 1.0, 1)
        scale = 0.75 * n / max(tw, th + base)
        org = (int(n / 2 - tw * scale / 2), int(n / 2 + th * scale / 2))
        cv2.putText(m, letter, org, cv2.FONT_HERSHEY_DUPLEX, scale, 255, max(2, n // 10), cv2.LINE_AA)
    else:
        cv2.fillPoly(m, [np.int32(np.array(polys[shape]) * n * 16)], 255, cv2.LINE_AA, shift=4)
    return m


@lru_cache(maxsize=256)
def _sprite(scene: SceneParams, level: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Premultiplied RGB, alpha and soft shadow of the object, halved `level` times."""
    if level:
        return tuple(cv2.pyrDown(x) for x in _sprite(scene, level - 1))  # type: ignore[return-value]
    a = _shape_mask(scene.shape, scene.seed).astype(np.float32) / 255
    edge = a - cv2.erode(a, np.ones((5, 5), np.uint8))  # dark outline for contrast
    rgb = _texture(scene) * ((1 - 0.7 * edge) * a)[..., None]
    return rgb, a, cv2.GaussianBlur(a, (0, 0), SPRITE / 24)


# --- compositing --------------------------------------------------------------------------------

def _paste(frame: np.ndarray, scene: SceneParams, x: float, y: float, px: float,
           angle: float = 0.0, opacity: float = 1.0, wipe: float | None = None) -> None:
    """Composite the object centred at (x, y), `px` pixels wide, turned `angle` degrees clockwise."""
    rgb, a, shadow = _sprite(scene, int(np.clip(np.log2(SPRITE / max(px, 1.0)), 0, 3)))
    n = a.shape[0]
    if wipe is not None:  # reveal left to right (or top to bottom) as wipe goes 0 -> 1
        ramp = np.clip((wipe * 1.2 - np.linspace(0, 1, n, dtype=np.float32)) / 0.2, 0, 1)
        ramp = ramp[None, :] if scene.seed % 2 else ramp[:, None]
        rgb, a, shadow = rgb * ramp[..., None], a * ramp, shadow * ramp
    m = cv2.getRotationMatrix2D((n / 2, n / 2), -angle, px / n)
    m[:, 2] += (x - n / 2, y - n / 2)
    ms = m.copy()
    ms[:, 2] += (0.07 * px, 0.09 * px)
    size = frame.shape[1::-1]
    frame *= 1 - 0.4 * opacity * cv2.warpAffine(shadow, ms, size)[..., None]
    alpha = cv2.warpAffine(a, m, size)[..., None] * opacity
    frame[:] = frame * (1 - alpha) + cv2.warpAffine(rgb, m, size) * opacity


def _fill(frame: np.ndarray, mask: np.ndarray, colour: Sequence[float], opacity: float = 1.0) -> None:
    a = mask.astype(np.float32)[..., None] * (opacity / 255)
    frame[:] = frame * (1 - a) + np.float32(colour) * a


def _poly(frame: np.ndarray, pts: Sequence[tuple[float, float]], colour: Sequence[float],
          opacity: float = 1.0, thickness: int = 0) -> None:
    """Anti-aliased, sub-pixel filled polygon (thickness 0) or open polyline."""
    mask = np.zeros(frame.shape[:2], np.uint8)
    p = [np.int32(np.round(np.array(pts) * 16))]
    if thickness:
        cv2.polylines(mask, p, False, 255, thickness, cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(mask, p, 255, cv2.LINE_AA, shift=4)
    _fill(frame, mask, colour, opacity)


def _quad(frame: np.ndarray, tex: np.ndarray, pts: Sequence[tuple[float, float]]) -> None:
    """Map a texture onto the quadrilateral `pts` (clockwise from top-left)."""
    h, w = tex.shape[:2]
    m = cv2.getPerspectiveTransform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), np.float32(pts))
    size = frame.shape[1::-1]
    alpha = cv2.warpPerspective(np.ones((h, w), np.float32), m, size)[..., None]
    frame[:] = frame * (1 - alpha) + cv2.warpPerspective(tex, m, size) * alpha


def _rect(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


# --- one function per kind of motion: (scene, p, (w, h)) -> float32 frame ------------------------

def _frame_move(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    x, y = (_lerp(a, b, p) for a, b in zip(scene.start, scene.end))
    bulge = scene.arc * np.sin(np.pi * p)
    x, y = (x, y + bulge) if scene.group == "left_right" else (x + bulge, y)
    _paste(f, scene, x * w, y * h, scene.size * h)
    return f


def _frame_towards(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    z = _lerp(scene.amount, 1.0, p)  # depth, far -> near; screen position is linear in 1/z
    t = (1 / z - 1 / scene.amount) / (1 - 1 / scene.amount)
    x, y = (_lerp(a, b, t) for a, b in zip(scene.start, scene.end))
    _paste(f, scene, x * w, y * h, 1.5 * scene.size * h / z)
    return f


def _frame_appear(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    x, y = scene.start
    fade = scene.style == "fade"
    _paste(f, scene, x * w, y * h, 1.2 * scene.size * h, opacity=p if fade else 1.0, wipe=None if fade else p)
    return f


def _frame_open(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    cx, cy, s = scene.start[0] * w, scene.start[1] * h, scene.size * h
    tex = _texture(scene)
    if scene.style == "door":  # a door swinging inwards around its left hinge
        dh, dw = 1.7 * s, 0.95 * s
        x0, y0 = cx - dw / 2, cy - dh / 2
        _poly(f, _rect(x0 - 2, y0 - 2, dw + 4, dh + 2), (0.85, 0.82, 0.75))  # frame
        _poly(f, _rect(x0, y0, dw, dh), (0.06, 0.05, 0.05))  # dark doorway
        th = np.radians(80 * p)
        xf, d = x0 + dw * np.cos(th), 0.12 * dh * np.sin(th)
        _quad(f, tex * (1 - 0.4 * np.sin(th)), [(x0, y0), (xf, y0 + d), (xf, y0 + dh - d), (x0, y0 + dh)])
    elif scene.style == "lid":  # a box whose lid swings up around the back hinge
        bw, bh = 1.5 * s, s
        x0, y0 = cx - bw / 2, cy - bh / 3
        _quad(f, tex, _rect(x0, y0, bw, bh))
        th, t = np.radians(115 * p), 0.2 * bh
        c, sn = np.cos(th), np.sin(th)
        lid = [(-bw, -t), (0, -t), (0, 0), (-bw, 0)]
        _quad(f, tex * 0.8, [(x0 + bw + c * u - sn * v, y0 + sn * u + c * v) for u, v in lid])
    else:  # a round mouth opening
        r, face, half = 0.75 * s, 180 * (scene.seed % 2), 45 * p
        mask = np.zeros((h, w), np.uint8)
        cv2.ellipse(mask, (int(cx * 16), int(cy * 16)), (int(r * 16),) * 2, face, half, 360 - half, 255, -1,
                    cv2.LINE_AA, shift=4)
        _fill(f, mask, scene.colour)
        ex = cx + (-0.1 if face else 0.1) * r
        _poly(f, _rect(ex - 0.08 * r, cy - 0.55 * r, 0.16 * r, 0.16 * r), (0.05, 0.05, 0.05))
    return f


def _frame_fill(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    gw, gh = 1.1 * scene.size * h, 1.9 * scene.size * h
    x0, y0 = scene.start[0] * w - gw / 2, scene.start[1] * h - gh / 2
    x1, y1 = x0 + gw, y0 + gh
    _poly(f, _rect(x0, y0, gw, gh), (0.9, 0.95, 1.0), 0.3)  # glass
    level = y1 - (0.05 + 0.88 * p) * gh
    _poly(f, [(x0, level), (x1, level), (x1, y1), (x0, y1)], scene.colour, 0.85)
    _poly(f, [(x0, level - 0.8), (x1, level - 0.8), (x1, level + 0.8), (x0, level + 0.8)],
          np.minimum(1, np.float32(scene.colour) + 0.35))  # surface highlight
    _poly(f, [(x0, y0), (x0, y1), (x1, y1), (x1, y0)], (0.95, 0.95, 0.95), 0.9, thickness=2)
    return f


def _frame_rotate(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    x, y = scene.start
    _paste(f, scene, x * w, y * h, 1.25 * scene.size * h, angle=scene.seed % 360 + scene.amount * p)
    return f


def _frame_more(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    f = _background(scene, w, h).copy()
    n = int(scene.amount)
    rng = np.random.default_rng(scene.seed)
    cells, jitter = rng.permutation(12)[:n], rng.uniform(-0.12, 0.12, (n, 2))  # 4 x 3 grid, in order
    for k, (cell, (jx, jy)) in enumerate(zip(cells, jitter)):
        o = float(np.clip((p * n - k) * 2.5, 0, 1))  # object k fades in early in its slot
        if o > 0:
            _paste(f, scene, (cell % 4 + 0.5 + jx) * w / 4, (cell // 4 + 0.5 + jy) * h / 3,
                   min(w / 4, h / 3) * 0.7 * (0.8 + 0.2 * o), opacity=o)
    return f


def _frame_zoom(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    canvas = _background(scene, 2 * w, 2 * h)
    z = scene.amount ** p  # geometric, so the zoom speed looks constant
    fx, fy = scene.start[0] * 2 * w, scene.start[1] * 2 * h  # fixed point of the zoom
    m = np.float32([[2 / z, 0, fx * (1 - 1 / z)], [0, 2 / z, fy * (1 - 1 / z)]])
    return cv2.warpAffine(canvas, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def _frame_pan(scene: SceneParams, p: float, size: Size) -> np.ndarray:
    w, h = size
    canvas = _background(scene, int(round(w * (1 + scene.amount))), h)
    x = _lerp(canvas.shape[1] - w, 0, p)  # camera turns left: the view window slides left
    m = np.float32([[1, 0, x], [0, 1, 0]])
    return cv2.warpAffine(canvas, m, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


RENDERERS: dict[str, Callable[[SceneParams, float, Size], np.ndarray]] = {
    "left_right": _frame_move, "up_down": _frame_move, "towards_away": _frame_towards,
    "appear_disappear": _frame_appear, "open_close": _frame_open, "fill_empty": _frame_fill,
    "rotate": _frame_rotate, "more_fewer": _frame_more, "zoom": _frame_zoom, "pan": _frame_pan,
}


def render_clip(group: str, cls: str, scene: SceneParams, variant: int = 0, size: Size = (160, 120),
                fps: float = 12, duration: tuple[float, float] = (2.0, 4.0)) -> np.ndarray:
    """Render one clip as (T, H, W, 3) uint8 RGB; pure (no I/O beyond cached sample photos)."""
    if scene.group != group or cls not in GROUPS[group]:
        raise ValueError(f"class {cls!r} does not belong to group {group!r} / scene {scene.scene_id}")
    p = variant_progress(scene, variant, fps, duration)
    if cls == GROUPS[group][1]:
        p = p[::-1]
    size = (int(size[0]), int(size[1]))
    return np.stack([np.clip(RENDERERS[group](scene, float(x), size) * 255 + 0.5, 0, 255).astype(np.uint8)
                     for x in p])


# --- files --------------------------------------------------------------------------------------

@contextmanager
def _stderr_silenced():
    """Silence what C libraries print on file descriptor 2 for the duration."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 12) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames: VP8 for .webm (decord reads it, browsers play it),
    'mp4v' for .mp4, MJPG for .avi."""
    path = Path(path)
    fourcc = FOURCCS.get(path.suffix.lower())
    if fourcc is None:
        raise ValueError(f"{path}: write .webm, .mp4 or .avi")
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    if w % 2 or h % 2:  # encoders silently drop an odd row / column
        raise ValueError(f"frame size {w}x{h}: width and height must be even")
    with _stderr_silenced():  # OpenCV's FFmpeg backend complains about the WebM tag, then writes VP8
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open a {fourcc!r} writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def write_untimed_avi(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25) -> Path:
    """Write RGB frames as an XviD AVI whose frames carry no timestamps, as in the AVIs of UCF101 and
    HMDB51 or opencv-doc's Megamind.avi (MPEG-4 Part 2 that may hold B-frames: FFmpeg then leaves their
    presentation times unset, and decord's seeks land on other frames). OpenCV writes the stream; then
    every VOL header's low_delay bit is cleared ("B-frames may follow"). The frames, decoded in order,
    are unchanged: the stream holds no B-frames. ``frames`` may be a generator (long videos)."""
    path, frames = Path(path), iter(frames)
    first = next(frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), float(fps), first.shape[1::-1])
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open an XVID writer for {path}")
    try:
        for frame in itertools.chain([first], frames):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    data = bytearray(path.read_bytes())
    found = 0
    for start, end in _avi_video_chunks(data):
        at = data.find(b"\x00\x00\x01\x20", start, end) + 4  # a VOL header (in each keyframe); its first
        if at < 4:  # 32 bits: random_accessible_vol 1, type 8, is_object_layer_identifier 1 (then verid 4,
            continue  # priority 3), aspect_ratio_info 4, vol_control_parameters 1 (then chroma_format 2, low_delay 1)
        bits = int.from_bytes(data[at:at + 4], "big")
        if not (bits >> 22 & 1 and bits >> 11 & 15 != 15 and bits >> 10 & 1):
            raise RuntimeError(f"{path}: a VOL header not laid out as FFmpeg writes it: {bits:08x}")
        data[at + 3] &= 0x7F  # low_delay, bit 24
        found += 1
    if not found:
        raise RuntimeError(f"{path}: no MPEG-4 VOL header found")
    path.write_bytes(bytes(data))
    return path


def _avi_video_chunks(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each video frame's data in an AVI (the '##dc' chunks of its 'movi' list)."""
    def chunks(at: int, end: int):
        while at + 8 <= end:
            size = int.from_bytes(data[at + 4:at + 8], "little")
            yield data[at:at + 4], at + 8, min(at + 8 + size, end)
            at += 8 + size + (size & 1)

    for cid, start, end in chunks(12, len(data)):  # after "RIFF" size "AVI "
        if cid == b"LIST" and data[start:start + 4] == b"movi":
            for fid, fstart, fend in chunks(start + 4, end):
                if fid[2:] == b"dc":
                    yield fstart, fend


def read_video(path: str | Path) -> np.ndarray:
    """Decode all frames with decord, (T, H, W, 3) uint8 RGB."""
    import decord
    vr = decord.VideoReader(str(path))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def write_reversed(src: str | Path, dst: str | Path, fps: float | None = None) -> Path:
    """Write the exact time reversal of the video `src` to `dst` (decoded with decord)."""
    import decord
    return write_video(dst, read_video(src)[::-1], fps or decord.VideoReader(str(src)).get_avg_fps())


def _test_scenes(group: str, n: int, seed: int) -> set[int]:
    """~30 % of a group's scenes are held out, at least one once there are two."""
    keys = [np.random.default_rng([seed, zlib.crc32(group.encode()), k, 1]).random() for k in range(n)]
    n_test = max(1, round(TEST_FRACTION * n)) if n >= 2 else 0
    return {int(k) for k in np.argsort(keys)[:n_test]}


def render_library(out_dir: str | Path, n_scenes_per_group: int = 2, variants: int = 2,
                   groups: Iterable[str] | None = None, seed: int = 0, size: Size = (160, 120),
                   fps: float = 12, progress: bool = True,
                   duration: tuple[float, float] = (2.0, 4.0)) -> list[SynthClip]:
    """Render every scene of every group in both directions and `variants` variants.

    Writes ``out_dir/<group>/<scene>_v<variant>_<class>.webm`` and ``out_dir/labels.csv``.
    """
    out = Path(out_dir).resolve()
    groups = list(GROUPS) if groups is None else list(groups)
    if unknown := [g for g in groups if g not in GROUPS]:
        raise ValueError(f"unknown groups {unknown}; known: {', '.join(GROUPS)}")
    if variants < 2:
        log.warning("variants=%d: no clip will have a same-scene, same-direction partner", variants)
    jobs: list[tuple[SynthClip, SceneParams]] = []
    for group in groups:
        held_out = _test_scenes(group, n_scenes_per_group, seed)
        for k in range(n_scenes_per_group):
            scene = make_scene(group, k, seed)
            for v in range(variants):
                n = len(variant_progress(scene, v, fps, duration))
                for direction, cls in zip(("forward", "reverse"), GROUPS[group]):
                    rel = f"{group}/{scene.scene_id}_v{v}_{cls}.webm"
                    clip = SynthClip(rel, group, cls, "test" if k in held_out else "train", scene.scene_id, v,
                                     direction, str(out / rel), n)
                    jobs.append((clip, scene))
    t0 = time.perf_counter()
    for clip, scene in tqdm(jobs, desc="synth", unit="clip", disable=not progress):
        write_video(clip.path, render_clip(clip.group, clip.cls, scene, clip.variant, size, fps, duration), fps)
    if jobs:  # catch a codec that writes files decord cannot read, once, early
        first = jobs[0][0]
        shape = read_video(first.path).shape
        if shape != (first.frames, size[1], size[0], 3):
            raise RuntimeError(f"{first.path} decodes as {shape}, expected {(first.frames, size[1], size[0], 3)}")
    clips = [clip for clip, _ in jobs]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(clip.row() for clip in clips)
    log.info("rendered %d clips into %s in %.1f s", len(clips), out, time.perf_counter() - t0)
    return clips


def read_labels(out_dir: str | Path) -> list[SynthClip]:
    """Read a library's labels.csv back (frames is -1: not stored)."""
    root = Path(out_dir).resolve()
    with open(root / "labels.csv", newline="") as fh:
        return [SynthClip(r["video"], r["group"], r["class"], r["split"], r["scene"], int(r["variant"]),
                          r["direction"], str(root / r["video"]), -1) for r in csv.DictReader(fh)]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Render a library of synthetic chiral videos.")
    ap.add_argument("out_dir")
    ap.add_argument("--scenes", type=int, default=3, help="scenes per group")
    ap.add_argument("--variants", type=int, default=2)
    ap.add_argument("--groups", nargs="*", choices=list(GROUPS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default="160x120", help="WIDTHxHEIGHT")
    ap.add_argument("--fps", type=float, default=12)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    w, h = (int(x) for x in args.size.lower().split("x"))
    render_library(args.out_dir, args.scenes, args.variants, args.groups, args.seed, (w, h), args.fps)


if __name__ == "__main__":
    main()
