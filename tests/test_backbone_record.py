"""The index records what made its features (backbone name, weights digest and source, preprocessing), and
search embeds query videos from that record: custom weights files, other weights refused, old indexes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from db import Setting, get_setting, open_db
from indexer.library import IndexDir
from indexer.pipeline import IndexSettingsError, run_index
from search import SearchEngine, SearchError
from tests.helpers import copy_library, small_options

ROOT = Path(__file__).resolve().parent.parent


def resnet18_weights(path: Path, seed: int) -> Path:
    """A resnet18 state_dict of our own (random, seeded): weights no hub knows."""
    import timm

    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet18").state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def custom(small_library, tmp_path_factory):
    """A library indexed with --backbone timm:resnet18 --backbone-weights A.safetensors."""
    root = tmp_path_factory.mktemp("custom")
    videos = copy_library(small_library[0], root / "videos", 4)
    a, b = resnet18_weights(root / "A.safetensors", 0), resnet18_weights(root / "B.safetensors", 1)
    index = root / "idx"
    run_index([root / "videos"], index, small_options(backbone="timm:resnet18", backbone_weights=str(a)))
    return index, videos, a, b


def test_the_record_names_the_weights_actually_loaded(custom):
    index, _, a, _ = custom
    with open_db(IndexDir(index).db)() as s:
        rec = get_setting(s, "backbone_record")
    assert rec["name"] == "timm:resnet18" and rec["weights_source"] == f"file:{a}" and rec["feature_dim"] == 512
    assert set(rec["preprocess"]) == {"resize", "crop", "mean", "std", "interpolation"}
    assert len(rec["weights_digest"]) == 16


def test_a_query_video_is_embedded_with_the_recorded_weights_in_a_fresh_offline_process(custom):
    index, videos, _, _ = custom
    script = (
        "import json, sys, numpy as np; from search import SearchEngine\n"
        "e = SearchEngine.open(sys.argv[1]); hits = e.search_video(sys.argv[2], k=3)\n"
        "stored = e.store.vectors([hits[0].clip_id])[0]; q = e.describe_video(sys.argv[2])\n"
        "print(json.dumps({'top': hits[0].video_path, 'cos': float(stored @ q / np.linalg.norm(stored) / np.linalg.norm(q))}))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, str(index), str(videos[1])], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["top"] == str(videos[1]) and got["cos"] > 0.999, got


def test_other_weights_are_refused_before_any_decoding_naming_both_digests(custom, tmp_path):
    index, _, a, b = custom
    with open_db(IndexDir(index).db)() as s:
        digest = get_setting(s, "backbone_record")["weights_digest"]
    new = copy_library(index.parent / "videos", tmp_path / "more", 1)  # work that would need decoding
    trace = tmp_path / "trace"
    os.environ.update(LIFT_SEARCH_TEST_TRACE=str(trace))
    try:
        with pytest.raises(IndexSettingsError) as err:
            run_index([index.parent / "videos", new[0].parent], index,
                      small_options(backbone="timm:resnet18", backbone_weights=str(b)))
    finally:
        del os.environ["LIFT_SEARCH_TEST_TRACE"]
    message = str(err.value)
    assert digest in message and "instead of" in message
    b_digest = message.split("weights with digest ")[1].split(" ")[0]
    assert b_digest != digest and len(b_digest) == 16
    assert "decode-start" not in trace.read_text().split()


def test_a_moved_or_changed_weights_file_is_refused_for_queries(custom, tmp_path):
    index, videos, a, b = custom
    moved = tmp_path / "A-moved.safetensors"
    a.rename(moved)
    try:
        with pytest.raises(Exception, match="which is gone"):
            SearchEngine.open(index).search_video(videos[0], k=1)
        hits = SearchEngine.open(index, backbone_weights=moved).search_video(videos[0], k=1)
        assert hits[0].video_path == str(videos[0])
        with pytest.raises(Exception, match="not those that made this index"):
            SearchEngine.open(index, backbone_weights=b).search_video(videos[0], k=1)
    finally:
        moved.rename(a)


def test_an_index_without_a_record_serves_clip_queries_and_says_what_video_queries_miss(small_library, tmp_path,
                                                                                      caplog):
    """An index from before backbone records: made with the pooled features (the only pooling then), which a
    later run without --pooling keeps (not today's default for a new index, "global+cells")."""
    index, library = tmp_path / "idx", tmp_path / "v"
    videos = copy_library(small_library[0], library, 4)
    run_index([library], index, small_options(pooling="global"))
    run_index([library], index, small_options())  # without --pooling: the index's own, not a new index's default
    sessions = open_db(IndexDir(index).db, write=True)
    with sessions.begin() as s:  # as an index made by an earlier lift-search
        s.delete(s.get(Setting, "backbone_record"))
    engine = SearchEngine.open(index)
    clip = engine.clips()[0]
    assert engine.search_clip(clip.clip_id, k=2)
    with pytest.raises(SearchError, match="did not record which weights"):
        engine.search_video(videos[0], k=1)
    run_index([library], index, small_options())  # a run records the weights it uses, and says so
    assert "did not record its backbone's weights" in caplog.text
    engine = SearchEngine.open(index)
    assert engine.settings["backbone_record"]["pooling"] == "global"
    assert engine.search_video(videos[0], k=1)[0].video_path == str(videos[0])
