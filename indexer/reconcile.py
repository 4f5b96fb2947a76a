"""Keeping the database and the vector store in agreement after a crash.

Writes always go database first, vectors second (and vectors first, database second for deletions),
so a crash can only leave (a) clips in the database whose vectors were never written, or (b) vectors
whose database rows were deleted. `reconcile` repairs both: (a) the video is dropped from the database
so the next run re-queues it (its features are cached, so this is cheap); (b) the vectors are removed.

Checking costs little while they agree: the database's clip count, highest id and id sum against the
store's (one pass over the clips' id index, no list of ids); only when these differ are the two id
sets compared.
"""
from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db import Clip, delete_videos, in_parts

from .store import VectorStore
from .testpoint import testpoint

log = logging.getLogger(__name__)

_NONE = np.zeros(0, np.int64)


def disagreement(session: Session, store: VectorStore) -> tuple[np.ndarray, np.ndarray]:
    """(clip ids in the database without a vector, vector ids without a database row)."""
    count, high, total = session.execute(select(func.count(Clip.id), func.max(Clip.id), func.sum(Clip.id))).one()
    if (count, high or 0, total or 0) == store.stats():
        return _NONE, _NONE
    db_ids = np.fromiter(session.scalars(select(Clip.id)), dtype=np.int64)
    store_ids = store.ids()
    return np.setdiff1d(db_ids, store_ids), np.setdiff1d(store_ids, db_ids)


def reconcile(sessions: sessionmaker, store: VectorStore) -> dict:
    """Repair the index in place (the caller holds the indexer lock); returns what was done.
    The caller commits the store if `removed_vectors` > 0."""
    with sessions.begin() as s:
        missing, orphans = disagreement(s, store)
        videos = []
        if len(missing):
            videos = sorted({v for part in in_parts(missing.tolist())
                             for v in s.scalars(select(Clip.video_id).where(Clip.id.in_(part)))})
            # the whole video goes, so it is re-queued as one piece; its other vectors go too
            other = [c for part in in_parts(videos) for c in s.scalars(select(Clip.id).where(Clip.video_id.in_(part)))]
            orphans = np.union1d(orphans, np.asarray(other, np.int64))
            delete_videos(s, videos)
    testpoint("reconciled-db")
    removed = store.remove(orphans) if len(orphans) else 0
    if len(videos) or removed:
        log.warning("repaired the index after an interrupted run: re-queued %d video(s), "
                    "removed %d stray vector(s)", len(videos), removed)
    return {"requeued_videos": len(videos), "removed_vectors": int(removed)}
