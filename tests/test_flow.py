"""Motion that transfers across scenes: the "global+cells" pooling (lift.backbones), feature flow and the
pinned motion path of a LiFT (lift.model), and their training (lift.train)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lift import LiFT, LiftConfig
from lift.backbones import LITE0_CELLS, BackboneRecord, load_backbone
from lift.config import DINO_BACKBONE, default_pooling
from lift.errors import BackboneError
from lift.train import TrainConfig, fit

GRID, CH, POOLED = 5, 6, 10


def blob_maps(T: int = 8, dx: int = 1, dy: int = 0, start=(1, 2), seed: int = 0) -> torch.Tensor:
    """(T, GRID * GRID * CH) maps: a background of random unit cells, and one distinctive cell (the blob)
    that moves by (dx, dy) cells per frame (positions clipped to the grid)."""
    rng = np.random.default_rng(seed)
    background = rng.normal(size=(GRID, GRID, CH))
    blob = rng.normal(size=CH) * 3
    frames = []
    for t in range(T):
        m = background.copy()
        x, y = np.clip(start[0] + dx * t, 0, GRID - 1), np.clip(start[1] + dy * t, 0, GRID - 1)
        m[y, x] = blob
        frames.append(m.reshape(-1))
    return torch.tensor(np.array(frames), dtype=torch.float32)


def flow_model(pin: float = 0.0, seed: int = 0) -> LiFT:
    torch.manual_seed(seed)
    cfg = LiftConfig(feature_dim=POOLED + GRID * GRID * CH, latent_dim=16, n_layers=1, n_heads=2,
                     feature_norm=True, flow_grid=GRID, flow_channels=CH, flow_radius=2, motion_pin=pin)
    model = LiFT(cfg).eval()
    if pin:
        model.motion_basis.normal_()
    return model


def clip(maps: torch.Tensor, seed: int = 0, still: bool = False) -> torch.Tensor:
    """Frame features: random pooled features (the same in every frame if `still`), then the maps."""
    pooled = torch.randn(1 if still else len(maps), POOLED, generator=torch.Generator().manual_seed(seed))
    return torch.cat([pooled.expand(len(maps), -1), maps], 1)


def test_feature_flow_follows_the_moving_cell_and_is_zero_where_nothing_moves():
    model = flow_model()
    for dx, dy in ((1, 0), (-1, 0), (0, 1)):
        start = (0, 2) if dx > 0 else (4, 2) if dx < 0 else (2, 0)
        tokens = model.flow(blob_maps(dx=dx, dy=dy, start=start)[None])[0].reshape(8, GRID * GRID, 2)  # (T, G, 2)
        total = tokens.sum(0).reshape(GRID, GRID, 2)
        x0, y0 = start
        moved = total[y0 + dy, x0 + dx]                      # where the blob was after its first step
        along, across = float(moved @ torch.tensor([dx, dy], dtype=torch.float32)), float(moved @ torch.tensor(
            [-dy, dx], dtype=torch.float32))
        assert along > 0.3 and abs(across) < along / 2      # it went the blob's way
        assert moved.abs().max() <= 2 * 8                    # at most `radius` cells a step
        far = total[(y0 + 2 * (dy == 0)) % GRID, (x0 + 2 * (dx == 0)) % GRID]  # a cell the blob never visits
        assert far.abs().max() < 0.05


def test_feature_flow_is_exactly_reversed_and_negated_by_time_reversal():
    model = flow_model()
    x = clip(blob_maps())[None].repeat(3, 1, 1) + 0.01 * torch.randn(3, 8, POOLED + GRID * GRID * CH)
    p, p_rev = model.prepare(x), model.prepare(x.flip(1))
    assert p.shape == (3, 8, POOLED + 2 * GRID * GRID)
    torch.testing.assert_close(p_rev, model.reverse_prepared(p), rtol=0, atol=0)
    # the sum of a clip's tokens is its total displacement: negated by reversal
    torch.testing.assert_close(p_rev[..., POOLED:].sum(1), -p[..., POOLED:].sum(1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("pin", [0.0, 1.0])
def test_describe_with_flow_and_pinned_motion_is_exactly_equivariant_to_reversal(pin):
    model = flow_model(pin)
    x = torch.randn(4, 8, POOLED + GRID * GRID * CH)
    d, d_rev = model.describe(x), model.describe(x.flip(1))
    assert d.shape == (4, 32)
    torch.testing.assert_close(d_rev[:, :16], d[:, :16], rtol=0, atol=1e-6)
    torch.testing.assert_close(d_rev[:, 16:], -d[:, 16:], rtol=0, atol=1e-6)
    assert model.reconstruct(x).shape == (4, 8, POOLED)  # the pooled features are rebuilt, not the maps


def test_the_pinned_path_makes_motion_agree_across_unrelated_looks():
    """Two clips whose blob moves right along the same row, with unrelated backgrounds, blobs and pooled
    features ("scenes"), and one moving left: with the pinned path the motion halves of the two right-movers
    agree, more than without it, and disagree with the left-mover's."""
    right_a = clip(blob_maps(dx=1, start=(0, 2), seed=1), 1, still=True)
    right_b = clip(blob_maps(dx=1, start=(0, 2), seed=2), 2, still=True)
    left = clip(blob_maps(dx=-1, start=(4, 2), seed=3), 3, still=True)
    x = torch.stack([right_a, right_b, left])

    def agreement(model):
        dyn = model.describe(x)[:, 16:]
        return float(dyn[0] @ dyn[1]), float(dyn[0] @ dyn[2])

    plain, pinned = flow_model(0.0, seed=4), flow_model(8.0, seed=4)
    basis = torch.linalg.svd(pinned.motion_target(pinned.prepare(x)).double(), full_matrices=False)[2][:16].T
    pinned.motion_basis.zero_()[:, :basis.shape[1]] = basis.float()
    (same_plain, _), (same_pinned, opposite_pinned) = agreement(plain), agreement(pinned)
    assert same_pinned > 0.8 and same_pinned > same_plain and opposite_pinned < 0


def test_fit_with_flow_sets_the_pinned_basis_and_is_seeded():
    rng = np.random.default_rng(0)
    seqs = np.stack([clip(blob_maps(dx=int(rng.choice([-1, 1])), start=(2, int(rng.integers(GRID))), seed=s), s).numpy()
                     for s in range(24)])
    cfg = flow_model(1.0).config
    tc = TrainConfig(latent_dim=16, epochs=3, progress=False)
    a, hist = fit(seqs, cfg, tc)
    b, _ = fit(seqs, LiftConfig.from_json(cfg.to_json()), tc)
    assert hist["anchor_basis"].shape == (cfg.target_dim, 16)
    torch.testing.assert_close(a.motion_basis, hist["anchor_basis"])
    torch.testing.assert_close(a.describe(seqs[:4]), b.describe(seqs[:4]))


def test_flow_layout_must_fit_the_features():
    with pytest.raises(ValueError, match="do not fit"):
        LiftConfig(feature_dim=100, flow_grid=5, flow_channels=6)


def test_models_without_flow_keep_their_names():
    cfg = LiftConfig(feature_dim=32, latent_dim=8)
    assert "flow_grid" not in cfg.architecture() and "motion_pin" not in cfg.architecture()


# ---- the "global+cells" pooling of efficientnet-lite0 ---------------------------------------------------
@pytest.fixture(scope="module")
def lite0_pair():
    return (load_backbone("efficientnet-lite0", device="cpu", runtime="torch", pooling="global"),
            load_backbone("efficientnet-lite0", device="cpu", runtime="torch", pooling="global+cells"))


def test_cells_pooling_adds_a_projected_map_after_the_same_pooled_features(lite0_pair):
    plain, cells = lite0_pair
    frames = np.random.default_rng(0).integers(0, 256, (3, 120, 160, 3), dtype=np.uint8)
    a, b = plain.encode_frames(frames), cells.encode_frames(frames)
    assert cells.dim == 1280 + LITE0_CELLS.dim == b.shape[1] and LITE0_CELLS.dim == 14 * 14 * 32
    np.testing.assert_allclose(b[:, :1280], a, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cells.encode_frames(frames), b)        # deterministic
    # the map: stage 5's cells, row by row, each projected by the shipped matrix
    m = cells.model
    with torch.no_grad():
        h = m.bn1(m.conv_stem(cells.preprocess_frames(frames)))
        for block in m.blocks[:LITE0_CELLS.stage + 1]:
            h = block(h)
    want = (h.flatten(2).transpose(1, 2) @ LITE0_CELLS.matrix()).flatten(1).numpy()
    np.testing.assert_allclose(b[:, 1280:], want, rtol=1e-4, atol=1e-4)


def test_cells_pooling_in_onnx_runtime_matches_pytorch(lite0_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_SEARCH_CACHE", str(tmp_path))
    fast = load_backbone("efficientnet-lite0", device="cpu", runtime="onnxruntime", pooling="global+cells")
    frames = np.random.default_rng(1).integers(0, 256, (2, 120, 160, 3), dtype=np.uint8)
    want = lite0_pair[1].encode_frames(frames)
    np.testing.assert_allclose(fast.encode_frames(frames), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_the_record_names_the_pooling_and_old_records_mean_global(lite0_pair):
    plain, cells = lite0_pair
    rec = cells.record
    assert rec.pooling == "global+cells" and rec.cells == LITE0_CELLS and rec.feature_dim == cells.dim
    assert BackboneRecord.from_dict(rec.to_dict()) == rec
    old = {k: v for k, v in plain.record.to_dict().items() if k not in ("pooling", "cells")}
    assert BackboneRecord.from_dict(old) == plain.record and plain.record.pooling == "global"
    assert any("pooling global+cells" in d for d in plain.record.differences(rec))


def test_unknown_or_unsupported_pooling_is_refused():
    with pytest.raises(BackboneError, match="unknown pooling"):
        load_backbone("efficientnet-lite0", device="cpu", runtime="torch", pooling="max")
    with pytest.raises(BackboneError, match="efficientnet-lite0 only"):
        load_backbone("timm:resnet18", device="cpu", pretrained=False, pooling="global+cells")


def test_a_changed_projection_file_is_refused(tmp_path, monkeypatch):
    import lift.backbones as bb
    fake = tmp_path / LITE0_CELLS.projection
    fake.write_bytes((bb.DATA / LITE0_CELLS.projection).read_bytes()[:-4] + b"\0\0\0\0")
    monkeypatch.setattr(bb, "DATA", tmp_path)
    with pytest.raises(BackboneError, match="not the projection lift-search ships"):
        LITE0_CELLS.matrix()


# ---- through the indexer and the engine ------------------------------------------------------------------
def test_the_default_pooling_is_the_backbone_s():
    assert default_pooling("efficientnet-lite0") == "global+cells"
    assert default_pooling(DINO_BACKBONE) == default_pooling("timm:resnet18") == "global"  # no cells there
    assert TrainConfig.motion_pin == 1.0


def test_the_default_index_pools_cells_fits_a_pinned_flow_lift_and_searches_with_the_recorded_pooling(
        small_index, small_library, tmp_path):
    """The default recipe of an efficientnet-lite0 index (the session's small_index, built with no --pooling
    and no --motion-pin): the record names the "global+cells" pooling, the fitted LiFT reads feature flow with
    the pinned path, a query video is embedded with the same pooling (its descriptor is its clip's), the
    reverse query negates exactly the motion half, and another pooling on the same index is refused."""
    import shutil

    from indexer.pipeline import IndexSettingsError, run_index
    from search import SearchEngine
    from tests.helpers import small_options

    library, clips = small_library
    index = small_index
    engine = SearchEngine.open(index)
    rec = engine.status()["backbone_record"]
    assert rec["pooling"] == "global+cells" and rec["feature_dim"] == 1280 + LITE0_CELLS.dim
    cfg = engine.model.config
    assert (cfg.flow_grid, cfg.flow_channels, cfg.motion_pin) == (LITE0_CELLS.grid, LITE0_CELLS.channels, 1.0)
    video = str(clips[0].path)
    hits = engine.search_video(video, k=3)
    assert os.path.realpath(hits[0].video_path) == os.path.realpath(video) and hits[0].score > 0.999
    seq = engine.video_sequence(video)
    assert seq.shape == (16, 1280 + LITE0_CELLS.dim)
    d, d_rev = engine.model.describe(seq[None]), engine.model.describe(seq.flip(0)[None])
    half = d.shape[1] // 2
    torch.testing.assert_close(d_rev[:, half:], -d[:, half:], rtol=0, atol=1e-5)
    # eval's baselines read the pooled part; the total feature flow joins them, negated by reversal
    from search import evaluate as ev

    rows = {m.key: m for m in ev.methods(engine.model)}
    assert "flow" in rows and rows["mean"].fn(seq[None].numpy()).shape == (1, 1280)
    flow = rows["flow"].fn(seq[None].numpy())
    assert flow.shape == (1, 2 * LITE0_CELLS.grid ** 2)
    np.testing.assert_allclose(rows["flow"].fn(seq.flip(0)[None].numpy()), -flow, atol=1e-5)
    copy = tmp_path / "idx"
    shutil.copytree(small_index, copy)
    with pytest.raises(IndexSettingsError, match="pooling"):
        run_index([library], copy, small_options(pooling="global"))
