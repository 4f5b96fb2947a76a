"""The LiFT network: the authors' checkpoint format, their outputs, our format, hostile files."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lift import CheckpointError, LiFT, LiftConfig
from lift.checkpoint import load_checkpoint

FIX = Path(__file__).parent / "fixtures"
CKPT = FIX / "official_format_d32.ckpt"


@pytest.fixture(scope="module")
def official():
    return LiFT.from_checkpoint(CKPT)


@pytest.fixture(scope="module")
def expected():
    return np.load(FIX / "official_format_d32_expected.npz")


@pytest.mark.parametrize("name", ["x16", "x12"])
def test_official_checkpoint_reproduces_authors_outputs(official, expected, name):
    z_s, z_d = official.encode(expected[name])
    x_hat = official.reconstruct(expected[name])
    np.testing.assert_allclose(z_s.numpy(), expected[f"{name}_zs"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(z_d.numpy(), expected[f"{name}_zd"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(x_hat.numpy(), expected[f"{name}_xhat"], atol=1e-5, rtol=0)


def test_dims_are_read_off_the_tensors(official):
    cfg = official.config
    assert (cfg.feature_dim, cfg.latent_dim, cfg.n_layers, cfg.max_len) == (384, 32, 4, 16)
    assert official.describe(torch.randn(2, 16, 384)).shape == (2, 64)


def test_longer_sequences_interpolate_the_position_table(official):
    x = torch.randn(2, 24, 384)
    z_s, z_d = official.encode(x)
    assert z_s.shape == (2, 32) and torch.isfinite(z_s).all()
    assert official.reconstruct(x).shape == (2, 24, 384)
    # the stretched table starts and ends where the original does
    pe = official.encoder.pos_encoder
    stretched = pe(torch.zeros(1, 31, 32))
    torch.testing.assert_close(stretched[:, 0], pe.pe[:, 0])
    torch.testing.assert_close(stretched[:, -1], pe.pe[:, -1])


def test_decoder_line_uses_t_over_T_minus_1(official):
    z_s, z_d = torch.randn(1, 32), torch.randn(1, 32)
    out = official.decoder(z_s, z_d, 5)
    torch.testing.assert_close(out[:, -1], official.decoder.model(z_s + z_d))
    torch.testing.assert_close(out[:, 0], official.decoder.model(z_s))


def test_describe_is_exactly_equivariant_to_time_reversal(official):
    """describe(reverse(x)) == [m, -dyn] of describe(x): a reverse query is a plain negation."""
    x = torch.randn(6, 16, 384)
    d, rev = official.describe(x), official.describe(x.flip(1))
    torch.testing.assert_close(rev[:, :32], d[:, :32], atol=1e-6, rtol=0)
    torch.testing.assert_close(rev[:, 32:], -d[:, 32:], atol=1e-6, rtol=0)
    # and each half is a unit vector
    torch.testing.assert_close(d[:, :32].norm(dim=1), torch.ones(6))


def test_calibrated_whitening_keeps_the_reversal_exact_and_decorrelates(official, tmp_path):
    torch.manual_seed(0)
    lib = torch.randn(200, 16, 384).cumsum(1) / 4  # trajectories, so that dyn is not noise
    lib[:, :, :8] += torch.linspace(0, 3, 16)[None, :, None]  # a drift every clip shares
    model = LiFT.from_checkpoint(official.save(tmp_path / "o.safetensors"))
    before = model.describe(lib)[:, 32:]
    model.calibrate(lib)
    assert model.config.whiten
    d, rev = model.describe(lib[:6]), model.describe(lib[:6].flip(1))
    torch.testing.assert_close(rev[:, :32], d[:, :32], atol=1e-6, rtol=0)
    torch.testing.assert_close(rev[:, 32:], -d[:, 32:], atol=1e-6, rtol=0)
    torch.testing.assert_close(d[:, 32:].norm(dim=1), torch.ones(6))

    def top_share(v):  # share of the second moment along its top direction
        vals = torch.linalg.eigvalsh(v.T.double() @ v.double())
        return float(vals[-1] / vals.sum())
    after = model.describe(lib)[:, 32:]
    assert top_share(after) < 0.5 * top_share(before)
    back = LiFT.from_checkpoint(model.save(tmp_path / "w.safetensors"))  # whitening travels with the weights
    assert back.config.whiten
    torch.testing.assert_close(back.describe(lib[:6]), d)


def test_files_without_whitening_still_load(tmp_path):
    from safetensors.torch import load_file, save_file
    torch.manual_seed(0)
    model = LiFT(LiftConfig(feature_dim=48, latent_dim=16, n_layers=1)).eval()
    path = model.save(tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    state = {k: v for k, v in load_file(str(path)).items() if "whiten" not in k and k != "static_mean"}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=meta)  # as written before whitening existed
    x = torch.randn(3, 16, 48)
    torch.testing.assert_close(LiFT.from_checkpoint(tmp_path / "old.safetensors").describe(x), model.describe(x))


def test_our_format_round_trips(tmp_path):
    torch.manual_seed(0)
    cfg = LiftConfig(feature_dim=48, latent_dim=16, n_layers=2, backbone="efficientnet-lite0", feature_norm=True)
    model = LiFT(cfg).eval()
    model.feature_mean.normal_()
    path = model.save(tmp_path / "m.safetensors")
    back = LiFT.from_checkpoint(path)
    assert back.config == cfg
    x = torch.randn(3, 16, 48)
    torch.testing.assert_close(back.describe(x), model.describe(x))


def test_official_converted_to_ours_gives_same_outputs(official, expected, tmp_path):
    back = LiFT.from_checkpoint(official.save(tmp_path / "o.safetensors"))
    np.testing.assert_allclose(back.encode(expected["x16"])[1].numpy(), expected["x16_zd"], atol=1e-6)


class Boom:
    def __reduce__(self):
        return (Path("/tmp/lift-search-pwned").touch, ())


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.encoder.x": Boom()}}, bad)
    Path("/tmp/lift-search-pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(bad)
    assert not Path("/tmp/lift-search-pwned").exists()
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not Path("/tmp/lift-search-pwned").exists()


def test_truncated_empty_and_wrong_shapes_are_clear_errors(tmp_path):
    data = CKPT.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.ckpt")
    ckpt = torch.load(CKPT, weights_only=True)
    ckpt["state_dict"]["model.decoder.model.3.weight"] = torch.zeros(5, 5)
    torch.save(ckpt, tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointError, match="decoder.model.3.weight: expected"):
        load_checkpoint(tmp_path / "shape.ckpt")
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a LiFT checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_download_offline_gives_clear_error(tmp_path, monkeypatch):
    import gdown

    from lift import checkpoint

    def offline(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(gdown, "download", offline)
    with pytest.raises(CheckpointError) as e:
        checkpoint.download_official(tmp_path)
    msg = str(e.value)
    assert checkpoint.OFFICIAL_GDRIVE_ID in msg and "--lift PATH" in msg and "efficientnet-lite0" in msg
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_download_uses_cache(tmp_path):
    from lift import checkpoint

    cached = tmp_path / checkpoint.OFFICIAL_NAME
    cached.write_bytes(CKPT.read_bytes())
    assert checkpoint.download_official(tmp_path) == cached
