"""Shared fixtures (session-scoped: built once per test run): a small rendered chiral library, a real index
built from it with the offline efficientnet-lite0 backbone and a LiFT fitted on it, the indexer driver
(tests/index_driver.py) whose runs a test may SIGKILL, and the metadata backends (SQLite; PostgreSQL where
LIFT_SEARCH_TEST_PG names a server: tests/pg_server.sh). Shared helpers live in tests/helpers.py."""
import os
import secrets
import tempfile
from pathlib import Path

import pytest

# lift-search's cache (exported ONNX backbones, downloads) in a folder of this test run, never the user's;
# set before anything is imported, so that subprocesses started by tests inherit it
os.environ["LIFT_SEARCH_CACHE"] = tempfile.mkdtemp(prefix="lift-search-test-cache-")

from indexer.pipeline import run_index
from indexer.synth import render_library
from lift.config import TrainConfig
from tests.helpers import RAY_TEST_ENV, SMALL_GROUPS, small_options
from tests.index_driver import Driver

PG_URL = os.environ.get("LIFT_SEARCH_TEST_PG")  # postgresql://user@host:port/dbname, password in PGPASSWORD
SMALL_INDEX_TRAIN = TrainConfig(latent_dim=64, epochs=80, patience=20, progress=False)


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
    run_index([library], index, small_options(train=SMALL_INDEX_TRAIN))
    return index


@pytest.fixture(scope="session")
def driver(tmp_path_factory):
    """The fork server of tests/index_driver.py: torch imported once, every run a process of its own."""
    d = Driver(tmp_path_factory.mktemp("driver"))
    yield d
    d.close()


# ---- metadata backends -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL database of its own for this test session, made next to LIFT_SEARCH_TEST_PG's (its role
    may create databases) and dropped at the end; skips where LIFT_SEARCH_TEST_PG is unset."""
    if not PG_URL:
        pytest.skip('LIFT_SEARCH_TEST_PG is unset: start a server with eval "$(bash tests/pg_server.sh start)"')
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"lift_test_{secrets.token_hex(4)}"
    admin = make_url(PG_URL)
    dsn = dict(host=admin.host, port=admin.port, user=admin.username, password=admin.password)
    with psycopg.connect(dbname=admin.database, autocommit=True, **dsn) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dbname=admin.database, autocommit=True, **dsn) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request) -> str | None:
    """The `--db` of a test's new indexes: None (the SQLite file in the index folder) or this session's
    PostgreSQL database. A test (or module fixture) that takes it runs on both."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


# a test that takes db_url and has this mark runs on PostgreSQL in the slow set only (the default set
# keeps a representative part of the PostgreSQL runs, to stay under 10 minutes)
slow_on_postgresql = pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)], indirect=True)


@pytest.fixture(scope="session")
def small_index_pg(small_library, pg_url, tmp_path_factory) -> Path:
    """small_index's twin with its metadata in PostgreSQL: the same library and options (tests must not
    modify it)."""
    library, _ = small_library
    index = tmp_path_factory.mktemp("index_pg") / "idx"
    run_index([library], index, small_options(db=pg_url, train=SMALL_INDEX_TRAIN))
    return index


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole test session (2 CPUs: the machine is shared), shut down at the end.
    This process is connected to it (an in-process `run_index(..., ray=...)` uses it as it is); its address
    is what a separate driver process joins. Skips where Ray is not installed."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import logging

    root = str(Path(__file__).resolve().parent.parent)  # the workers import this checkout's code
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    os.environ.update(RAY_TEST_ENV)  # (driver processes started before this one pass it themselves)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
