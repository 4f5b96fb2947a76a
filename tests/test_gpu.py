"""The CUDA path (marked `gpu`; run on a GPU machine: `python -m pytest -m gpu`). Without CUDA these tests
skip, saying so; CI has no GPU."""
import numpy as np
import pytest
import torch

from indexer.synth import render_library
from lift import LiFT, LiftConfig, load_backbone

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> np.ndarray:
    """Real rendered frames (48 of them, 224 px), from the chiral generator."""
    from indexer.decode import decode_one

    root = tmp_path_factory.mktemp("gpu")
    clips = render_library(root / "v", n_scenes_per_group=1, variants=1, groups=["left_right", "open_close"],
                           seed=0, progress=False)
    return np.concatenate([decode_one(c.path, short_side=224).frames for c in clips])[:48]


@pytest.mark.parametrize("name", ["efficientnet-lite0"])
def test_cuda_features_match_cpu_fp32_per_frame(frames, name):
    cpu = load_backbone(name, device="cpu", runtime="torch").encode_frames(frames)
    gpu = load_backbone(name, device="cuda").encode_frames(frames)
    cos = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert cos.min() > 0.999, f"worst frame cosine {cos.min():.5f}"


def test_lift_describe_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = LiFT(LiftConfig(feature_dim=64, latent_dim=32, n_layers=2, feature_norm=True)).eval()
    x = torch.randn(8, 16, 64)
    want = model.describe(x)
    got = model.to("cuda").describe(x.cuda()).cpu()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_whole_index_run_on_cuda_gives_the_cpu_run_s_vectors(small_index, small_library, tmp_path):
    """The same library and LiFT weights, indexed on CUDA: the same clips, each vector within cosine 0.99 of
    the CPU run's (the backbone runs under autocast on CUDA)."""
    from indexer.library import IndexDir
    from indexer.pipeline import run_index
    from tests.helpers import small_options, snapshot

    library, _ = small_library
    cpu = snapshot(small_index)
    model = IndexDir(small_index).model_path(cpu["model"])
    run_index([library], tmp_path / "gpu", small_options(device="cuda", lift=str(model)))
    gpu = snapshot(tmp_path / "gpu")
    assert not gpu["problems"] and set(cpu["vectors"]) == set(gpu["vectors"]) and gpu["model"] == cpu["model"]
    cos = [float(cpu["vectors"][k] @ gpu["vectors"][k]) / 2 for k in cpu["vectors"]]  # two unit halves
    assert min(cos) > 0.99, min(cos)
