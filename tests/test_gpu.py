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


def test_cuda_picks_float16_for_conv_nets_and_batches_keep_features_independent(frames):
    """The measured autocast choice on CUDA (float16 for efficientnet-lite0: bfloat16 is ~0.995 per frame), and
    fixed-shape batches: a video's features are bit for bit the same alone or batched with other videos."""
    gpu = load_backbone("efficientnet-lite0", device="cuda")
    assert gpu.amp_dtype is torch.float16
    a, b, c = frames[:16], frames[16:21], frames[21:48]
    alone = [gpu.encode_frames(v) for v in (a, b, c)]
    together = gpu.encode_videos([a, b, c], batch_size=32)
    shifted = gpu.encode_videos([frames[40:43], a, b, c], batch_size=32)[1:]
    for x, y, z in zip(alone, gpu.encode_videos([a, b, c]), shifted):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert [t.shape for t in together] == [(16, gpu.dim), (5, gpu.dim), (27, gpu.dim)]


def test_a_ray_index_run_on_cuda_gives_the_local_cuda_run_s_vectors(small_index, small_library, tmp_path):
    """--ray with --device cuda (a GPU actor, num_gpus=1) against the local CUDA run: the same clips and vectors
    to 1e-5, so resuming or distributing a GPU run changes nothing."""
    pytest.importorskip("ray")
    from indexer.library import IndexDir
    from indexer.pipeline import run_index
    from tests.helpers import differences, small_options, snapshot

    library, _ = small_library
    model = IndexDir(small_index).model_path(snapshot(small_index)["model"])
    local = run_index([library], tmp_path / "local", small_options(device="cuda", lift=str(model)))
    ray = run_index([library], tmp_path / "ray", small_options(device="cuda", lift=str(model), ray="auto", ray_cpus=4))
    assert ray.backbone["ray"]["embedder_gpus"] == 1 and ray.backbone["device"].startswith("cuda")
    assert differences(snapshot(tmp_path / "local"), snapshot(tmp_path / "ray")) == []
    assert local.clips_added == ray.clips_added
