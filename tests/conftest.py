"""Shared fixtures (session-scoped: built once per test run): a small rendered chiral library, a real index
built from it with the offline efficientnet-lite0 backbone and a LiFT fitted on it, and the indexer driver
(tests/index_driver.py) whose runs a test may SIGKILL. Shared helpers live in tests/helpers.py."""
import os
import tempfile
from pathlib import Path

import pytest

# lift-search's cache (exported ONNX backbones, downloads) in a folder of this test run, never the user's;
# set before anything is imported, so that subprocesses started by tests inherit it
os.environ["LIFT_SEARCH_CACHE"] = tempfile.mkdtemp(prefix="lift-search-test-cache-")

from indexer.pipeline import run_index
from indexer.synth import render_library
from lift.config import TrainConfig
from tests.helpers import SMALL_GROUPS, small_options
from tests.index_driver import Driver


@pytest.fixture(scope="session")
def small_library(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("library")
    clips = render_library(root / "videos", n_scenes_per_group=1, variants=2, groups=SMALL_GROUPS,
                           seed=0, progress=False)
    return root / "videos", clips


@pytest.fixture(scope="session")
def small_index(small_library, tmp_path_factory) -> Path:
    """An index of the small library (16 clips), built once; tests must not modify it."""
    library, _ = small_library
    index = tmp_path_factory.mktemp("index") / "idx"
    run_index([library], index, small_options(train=TrainConfig(latent_dim=64, epochs=80, patience=20,
                                                                progress=False)))
    return index


@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    """The fork server of tests/index_driver.py: torch imported once, every run a process of its own."""
    d = Driver(tmp_path_factory.mktemp("driver"))
    yield d
    d.close()
