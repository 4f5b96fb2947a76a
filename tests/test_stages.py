"""The stages on their own (indexer/stages.py, indexer/embed.py): fixed-shape backbone batches across videos (a
video's features do not depend on which videos share its batches), the Embedder's cache, what a Ray CPU actor's
embedder imports, and the measured autocast choice."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.decode import decode_one
from indexer.embed import Embedder, EmbedderSpec
from indexer.library import IndexDir, VideoFeatures
from lift import load_backbone
from lift.backbones import choose_amp_dtype

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(small_library) -> list:
    """Four decoded library videos (16 frames each: three at 224 px, one at 240 px, which the backbone's
    preprocessing resizes)."""
    library, clips = small_library
    return [decode_one(c.path, short_side=224 if i < 3 else 240) for i, c in enumerate(clips[:4])]


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_a_video_s_features_do_not_depend_on_its_batch_neighbours(videos, runtime):
    backbone = load_backbone("efficientnet-lite0", device="cpu", runtime=runtime)
    frames = [videos[0].frames[:6], videos[1].frames[:5], videos[3].frames[:7]]  # 240 px: resized in preprocessing
    alone = [backbone.encode_frames(f) for f in frames]  # one video a call, each padded to 8 frames
    together = backbone.encode_videos(frames)            # 18 frames: batches of 8 across video boundaries
    shifted = backbone.encode_videos([frames[0][:3], *frames])  # every frame at another place in its batch
    assert [a.shape for a in together] == [(len(f), backbone.dim) for f in frames]
    for a, b, c in zip(alone, together, shifted[1:]):
        np.testing.assert_array_equal(a, b)  # bit for bit: every call has the same shape, rows are independent
        np.testing.assert_array_equal(a, c)
    # and not trivially: the features do differ from frame to frame and video to video
    assert np.abs(alone[0][0] - alone[0][-1]).max() > 1e-2 and np.abs(alone[0][0] - alone[1][0]).max() > 1e-2


def test_the_embedder_caches_the_same_features_however_videos_are_grouped(videos, tmp_path):
    backbone = load_backbone("efficientnet-lite0", device="cpu")
    one, two = Embedder(backbone, IndexDir(tmp_path / "a")), Embedder(backbone, IndexDir(tmp_path / "b"))
    videos = videos[2:]  # 2 x 16 frames
    timing = one([(d, f"v{i}") for i, d in enumerate(videos)])
    assert set(timing) == {"backbone", "cache"}
    for i, d in enumerate(videos):
        two([(d, f"v{i}")])
    for i, d in enumerate(videos):
        a = VideoFeatures.load(one.idx.features_path(f"v{i}"))
        b = VideoFeatures.load(two.idx.features_path(f"v{i}"))
        np.testing.assert_array_equal(a.feats, b.feats)
        np.testing.assert_array_equal(a.frame_indices, d.frame_indices)
        assert a.plans == d.plans and a.thumbs.shape[0] == len(d.plans)


def test_a_ray_actor_s_embedder_runs_the_driver_s_onnx_export_or_builds_the_backbone(tmp_path, caplog):
    driver = load_backbone("efficientnet-lite0", device="cpu", pooling="global")
    spec = EmbedderSpec(driver.record.to_dict(), str(tmp_path), "cpu", onnx=driver.onnx_file.read_bytes())
    lean = spec.build().backbone  # lift.onnx_frames: no torch (test_backbones.py checks it imports none)
    assert lean.runtime == "onnxruntime" and lean.record == driver.record.to_dict()
    # an export this node cannot run (here: not ONNX at all) costs the start-up it saves, with a warning
    with caplog.at_level("WARNING"):
        built = EmbedderSpec(driver.record.to_dict(), str(tmp_path), "cpu", onnx=b"not onnx").build().backbone
    assert built.model is not None and "does not run here" in caplog.text
    frames = np.random.default_rng(0).integers(0, 256, (9, 224, 300, 3), dtype=np.uint8)
    want = driver.encode_frames(frames)
    np.testing.assert_array_equal(lean.encode_frames(frames), want)
    np.testing.assert_array_equal(built.encode_frames(frames), want)  # the same export, from the cache
    other = [frames[:5], frames[5:, :, :256], frames[:3, :, :224]]   # crops of other widths, a square one
    np.testing.assert_array_equal(np.concatenate(lean.encode_videos(other)),
                                  np.concatenate(driver.encode_videos(other)))
    resized = np.random.default_rng(1).integers(0, 256, (4, 240, 320, 3), dtype=np.uint8)  # not at the record's
    np.testing.assert_array_equal(lean.encode_videos([resized])[0], driver.encode_frames(resized))  # size: torch


def test_a_ray_cpu_actor_embeds_and_caches_without_torch_or_the_database(videos, tmp_path):
    """What a Ray CPU actor imports is its start-up on every worker: the embed stage with the driver's ONNX export
    needs neither torch nor the database nor the vector store (SQLAlchemy alone cost each actor ~0.3 s)."""
    driver = load_backbone("efficientnet-lite0", device="cpu", pooling="global")
    spec = EmbedderSpec(driver.record.to_dict(), str(tmp_path / "actor"), "cpu", onnx=driver.onnx_file.read_bytes())
    (tmp_path / "job.pkl").write_bytes(pickle.dumps((spec, videos[2])))
    code = """
import pickle, sys
import indexer.ray_runner  # the actor's module
spec, video = pickle.load(open(sys.argv[1], "rb"))
spec.build()([(video, "v0")])
heavy = sorted(m for m in ("torch", "timm", "sqlalchemy", "faiss", "db", "indexer.stages") if m in sys.modules)
assert not heavy, f"a Ray CPU actor imports {heavy}"
"""
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "job.pkl")], check=True, cwd=REPO)
    Embedder(driver, IndexDir(tmp_path / "driver"))([(videos[2], "v0")])
    a, b = (VideoFeatures.load(IndexDir(tmp_path / w).features_path("v0")) for w in ("actor", "driver"))
    np.testing.assert_array_equal(a.feats, b.feats)
    np.testing.assert_array_equal(a.thumbs, b.thumbs)


def test_the_autocast_dtype_is_chosen_by_measuring_it():
    """On the CPU (bfloat16 autocast): kept when it is close enough to float32, refused (None: float32) when
    the bar is above what it reaches; efficientnet-lite0 in bfloat16 is ~0.995 per frame, under 0.999."""
    backbone = load_backbone("efficientnet-lite0", device="cpu", runtime="torch")
    probe = backbone.probe(2)
    with torch.inference_mode():
        want = backbone.pooled(probe)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = backbone.pooled(probe).float()
    cos = float(torch.nn.functional.cosine_similarity(got, want, dim=1).min())
    assert 0.9 < cos < 0.9995, cos
    assert choose_amp_dtype(backbone.pooled, probe, "cpu", (torch.bfloat16,), min_cosine=cos - 1e-4) is torch.bfloat16
    assert choose_amp_dtype(backbone.pooled, probe, "cpu", (torch.bfloat16,), min_cosine=0.9995) is None
