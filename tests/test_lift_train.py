"""Self-supervised training on synthetic moving-object feature sequences."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier

from lift import LiFT, LiftConfig
from lift.train import TrainConfig, anchor_basis, chord, fit


def moving_blobs(n, T=16, D=48, seed=0):
    """'Features' of a blob moving across a 1-D retina (D cells), left or right, at random speeds,
    start points and widths. Returns x (n, T, D) and the direction (1 = rightwards)."""
    rng = np.random.default_rng(seed)
    cells = np.arange(D)
    direction = rng.integers(0, 2, n)
    x = np.zeros((n, T, D), np.float32)
    for i in range(n):
        start, speed, width = rng.uniform(8, D - 8), rng.uniform(0.6, 1.6), rng.uniform(2, 5)
        path = start + (1 if direction[i] else -1) * speed * (np.arange(T) - T / 2)
        x[i] = np.exp(-0.5 * ((cells[None] - path[:, None]) / width) ** 2)
    return x + 0.02 * rng.standard_normal(x.shape).astype(np.float32), direction


@pytest.fixture(scope="module")
def trained():
    x, y = moving_blobs(320)
    cfg = LiftConfig(feature_dim=48, latent_dim=32, n_layers=2, n_heads=4, feature_norm=True)
    model, hist = fit(x[:240], cfg, TrainConfig(epochs=40, batch_size=64, patience=40, anchor=0, progress=False))
    return model, hist, x, y


def test_training_lowers_the_loss(trained):
    _, hist, _, _ = trained
    assert hist["train_loss"][-1] < 0.5 * hist["train_loss"][0]
    assert min(hist["val_loss"]) < 0.6 * hist["val_loss"][0]
    assert "best_val_loss" in trained[0].config.provenance


def test_trained_model_separates_a_sequence_from_its_reversal(trained):
    model, _, x, y = trained
    # z_d of a clip and of its reversal point different ways
    _, zd = model.encode(x[240:])
    _, zd_rev = model.encode(np.ascontiguousarray(x[240:, ::-1]))
    assert torch.nn.functional.cosine_similarity(zd, zd_rev).mean() < 0.5
    # and a linear probe on the paper's descriptor tells the direction on held-out clips,
    # where mean pooling of the same features cannot
    def probe(feats):
        clf = RidgeClassifier().fit(feats[:240], y[:240])
        return clf.score(feats[240:], y[240:])

    zs_all, zd_all = model.encode(x)
    lift_acc = probe(torch.cat([zs_all, zd_all], 1).numpy())
    pooled_acc = probe(x.mean(1))
    assert lift_acc >= 0.9, lift_acc
    assert pooled_acc < 0.75, pooled_acc


def test_training_is_seeded():
    x, _ = moving_blobs(40, seed=1)
    cfg = lambda: LiftConfig(feature_dim=48, latent_dim=16, n_layers=1, n_heads=2, feature_norm=True)
    tc = TrainConfig(epochs=3, batch_size=16, anchor=0, progress=False)
    a, _ = fit(x, cfg(), tc)
    b, _ = fit(x, cfg(), tc)
    torch.testing.assert_close(a.describe(x[:4]), b.describe(x[:4]))


def test_bad_training_input_is_refused():
    with pytest.raises(ValueError, match="features must be"):
        fit(np.zeros((4, 16, 10)), LiftConfig(feature_dim=48, latent_dim=16), TrainConfig(progress=False))


def test_cli_train_writes_a_loadable_model(tmp_path, capsys):
    from search.cli import main

    x, _ = moving_blobs(24, seed=2)
    np.save(tmp_path / "a.npy", x[:12])
    np.savez(tmp_path / "b.npz", features=x[12:])
    out = tmp_path / "m.safetensors"
    assert main(["train", str(tmp_path / "a.npy"), str(tmp_path / "b.npz"), "--out", str(out),
                 "--latent-dim", "16", "--epochs", "3", "--device", "cpu"]) == 0
    assert "trained on 24 sequences" in capsys.readouterr().out
    model = LiFT.from_checkpoint(out)
    assert model.config.feature_dim == 48 and model.config.provenance["sequences"] == 24


def test_chord_is_the_net_change_of_the_normalised_frames():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 16, 8, generator=gen) + 0.1
    unit = x / x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(chord(x), unit[:, -1] - unit[:, 0])
    torch.testing.assert_close(chord(x.flip(1)), -chord(x))              # reversal negates it
    scaled = x * torch.rand(3, 16, 1, generator=gen).add(0.5)            # a frame's brightness: no effect
    torch.testing.assert_close(chord(scaled), chord(x))


def test_anchor_points_z_d_along_the_chord_on_held_out_clips():
    """With the anchor, z_d of clips not trained on points along their chord in the training clips' principal
    chord directions (the anchor's target); without it, it does not."""
    x, _ = moving_blobs(320, seed=2)

    def held_out_cos(anchor: float) -> float:
        cfg = LiftConfig(feature_dim=48, latent_dim=32, n_layers=2, n_heads=4, feature_norm=True)
        tc = TrainConfig(epochs=20, batch_size=64, patience=40, progress=False, anchor=anchor)
        model, hist = fit(x[:240], cfg, tc)
        basis = hist["anchor_basis"] if anchor else anchor_basis(torch.as_tensor(x[:240]), 32)
        _, zd = model.encode(x[240:])
        target = chord(torch.as_tensor(x[240:])) @ basis
        return float(torch.nn.functional.cosine_similarity(zd, target, dim=-1).abs().mean())

    plain, anchored = held_out_cos(0.0), held_out_cos(10.0)
    assert anchored > 0.9 and anchored > plain + 0.3, (plain, anchored)


def test_anchor_basis_is_the_top_principal_directions_of_the_chords():
    gen = torch.Generator().manual_seed(0)
    # frames in span(e0, e1, e2) of an 8-d space, spread mostly along e0, then e1, then e2
    scale = torch.tensor([5.0, 2.0, 0.5] + [0.0] * 5)
    x = torch.randn(64, 16, 8, generator=gen) * scale                   # (N, T, D)
    x = torch.cat([x, x.flip(1)])                                       # with reversals, as in training
    basis = anchor_basis(x, 4)
    assert basis.shape == (8, 4)
    torch.testing.assert_close(basis[:, :3].T @ basis[:, :3], torch.eye(3), atol=1e-5, rtol=0)
    s = chord(x)                                                        # (N, D), in span(e0, e1, e2)
    torch.testing.assert_close(s @ basis[:, :3] @ basis[:, :3].T, s, atol=1e-5, rtol=0)  # they span it
    energy = (s @ basis).pow(2).sum(0)                                  # in decreasing order
    assert bool((energy[:-1] >= energy[1:]).all()) and float(energy[3]) < 1e-8
    # fewer clips than d: the extra columns are zero
    assert float(anchor_basis(x[:2], 4)[:, 2:].abs().max()) == 0.0
