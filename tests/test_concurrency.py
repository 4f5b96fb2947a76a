"""Concurrent use: searches while an index run writes (never "database is locked", never an id out of
step with its vector), one indexer per index (the second is refused, naming the holder; a SIGKILLed
holder's lock is free at once), and write transactions that take the write lock up front. The database
tests run on SQLite and, where a server is given (tests/pg_server.sh), on PostgreSQL (`db_url`)."""
from __future__ import annotations

import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from db import Database, open_db
from db.location import new_schema
from db.session import get_setting, set_setting
from indexer.lock import IndexLock, IndexLocked
from search import SearchEngine
from tests.helpers import good_videos, make_library, record, snapshot


# ---- one indexer per index --------------------------------------------------------------------------
def test_second_indexer_is_refused_naming_the_holder_and_a_killed_holders_lock_is_free(tmp_path, capsys):
    from search.cli import main

    index = tmp_path / "idx"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[2]); from indexer.lock import "
         "IndexLock; IndexLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
         str(index), str(Path(__file__).resolve().parent.parent)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexLocked) as e:
            IndexLock(index).acquire()
        msg = str(e.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in msg and "another indexer is running" in msg
        (tmp_path / "v").mkdir()
        assert main(["index", str(tmp_path / "v"), "--index", str(index), "--json"]) == 2  # the CLI says so too
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "Traceback" not in err
        holder.send_signal(signal.SIGKILL)  # killed: no chance to clean up ...
        holder.wait()
        assert f'"pid": {holder.pid}' in (index / "indexer.lock").read_text()  # ... its note is still there,
        t = time.perf_counter()
        lock = IndexLock(index).acquire()  # ... but the kernel released the flock: free at once
        assert time.perf_counter() - t < 1
        lock.release()
    finally:
        holder.kill()
        holder.wait()


# ---- the database ------------------------------------------------------------------------------------
def test_write_transactions_take_the_lock_up_front_and_readers_never_wait(db_url, tmp_path):
    """Two read-then-write transactions at once: with a deferred BEGIN the second upgrade would fail at
    once with "database is locked" (SQLite cannot wait there); BEGIN IMMEDIATE makes it wait its turn.
    On PostgreSQL, without the advisory lock both would read 0 and one update would be lost (both
    checked by mutation)."""
    where = tmp_path / "x.db" if db_url is None else Database(Database.parse(db_url).url, new_schema(tmp_path))
    writer = open_db(where, write=True)
    with writer.begin() as s:
        set_setting(s, "n", 0)
    errors = []

    def bump():
        try:
            with writer.begin() as s:
                n = get_setting(s, "n")
                time.sleep(0.2)
                set_setting(s, "n", n + 1)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    reader = open_db(where)
    with reader() as r:  # a long read transaction, open across both writes
        assert get_setting(r, "n") == 0
        threads = [threading.Thread(target=bump) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert get_setting(r, "n") == 0  # its snapshot does not move ...
    with reader() as r:
        assert get_setting(r, "n") == 2 and errors == []  # ... and no write was lost
    for sessions in (reader, writer):
        sessions.kw["bind"].dispose()


def test_a_writer_killed_mid_transaction_leaves_no_lock_and_no_half_write(db_url, tmp_path):
    """SIGKILLed inside a write transaction (holding SQLite's write lock, or the index's advisory lock on
    PostgreSQL): its write is gone and the next writer goes ahead at once (no lock left behind)."""
    where = tmp_path / "x.db" if db_url is None else Database(Database.parse(db_url).url, new_schema(tmp_path))
    writer = open_db(where, write=True)
    with writer.begin() as s:
        set_setting(s, "n", 0)
    spec = json.dumps({"path": str(where)} if db_url is None else where.record())
    child = subprocess.Popen(
        [sys.executable, "-c", "import json, sys, time; sys.path.insert(0, sys.argv[2]); from db import Database, "
         "open_db, set_setting; spec = json.loads(sys.argv[1]); where = spec.get('path') or Database.parse("
         "spec['url'], spec['schema']); s = open_db(where, write=True)(); s.begin(); set_setting(s, 'n', 1); "
         "s.flush(); print('holding', flush=True); time.sleep(600)", spec, str(Path(__file__).resolve().parent.parent)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "holding"
        child.send_signal(signal.SIGKILL)
        child.wait()
        t = time.perf_counter()
        with writer.begin() as s:
            assert get_setting(s, "n") == 0  # the killed write never happened ...
            set_setting(s, "n", 2)
        assert time.perf_counter() - t < 5  # ... and left no lock to wait for
    finally:
        child.kill()
        child.wait()
    writer.kw["bind"].dispose()


# ---- searches during an index run --------------------------------------------------------------------
def test_searches_during_an_index_run_never_fail(driver, db_url, tmp_path):
    videos = make_library(tmp_path / "videos", groups=("left_right", "up_down"))
    index = tmp_path / "idx"
    assert driver.run([videos], index, opts={"db": db_url})[0] == "exit 0"
    extra = make_library(tmp_path / "extra", groups=("open_close", "rotate", "towards_away"), crash=False)
    for f in good_videos(extra):
        shutil.copy2(f, videos / f.name)  # 6 new videos, stored one checkpoint each (6 commits + saves)

    stop, errors, counts, served_bad = threading.Event(), [], {"searches": 0, "opens": 0, "status": 0}, []

    def searcher(seed: int, reopen_every: int):
        rng = random.Random(seed)
        try:
            engine = SearchEngine.open(index)
            counts["opens"] += 1
            i = 0
            while not stop.is_set():
                i += 1
                if i % reopen_every == 0:
                    engine = SearchEngine.open(index)  # opens while the run writes (and never blocks it)
                    counts["opens"] += 1
                clips = engine.clips()
                hits = engine.search_clip(rng.choice(clips).clip_id, k=5, motion=rng.random())
                counts["searches"] += 1
                valid = engine.served_ids()
                served_bad.extend(h.clip_id for h in hits if h.clip_id not in valid)
                if i % 10 == 0:
                    engine.status()
                    counts["status"] += 1
        except Exception as e:  # noqa: BLE001 -- any error at all fails the test
            errors.append(repr(e))

    threads = [threading.Thread(target=searcher, args=(k, every)) for k, every in ((1, 5), (2, 1000))]
    for t in threads:  # searching before the run starts, too: an indexer is never refused by searches
        t.start()
    time.sleep(0.5)
    job = driver.start([videos], index, opts={"checkpoint_videos": 1})
    during = counts["searches"]
    while not driver.finished(0.05):
        if errors:
            break
    during = counts["searches"] - during
    status, result, _, seconds = driver.wait(job)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    assert status == "exit 0" and result["ok"] and result["report"]["new"] == 6, result
    assert errors == [] and served_bad == []
    assert during >= 20, counts
    assert not snapshot(index)["problems"]
    engine = SearchEngine.open(index)
    assert len(engine.clips()) == 10 and not engine.hidden_ids
    record("concurrency" if db_url is None else "concurrency_postgresql", {
        "searches_during_indexing": during, "searches_total": counts["searches"],
        "engine_opens": counts["opens"], "status_calls": counts["status"],
        "index_run_s": round(seconds, 1), "checkpoints_written_during_run": 6,
        "errors": len(errors), "database_is_locked": 0})
