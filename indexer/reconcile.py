"""Keeping the database and the FAISS file in agreement after a crash.

Writes always go database first, vectors second (and vectors first, database second for deletions),
so a crash can only leave (a) clips in the database whose vectors were never written, or (b) vectors
whose database rows were deleted. `reconcile` repairs both: (a) the video is dropped from the database
so the next run re-queues it (its features are cached, so this is cheap); (b) the vectors are removed.
"""
from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import Clip, delete_videos

from .store import VectorStore
from .testpoint import testpoint

log = logging.getLogger(__name__)


def disagreement(session: Session, store: VectorStore) -> tuple[np.ndarray, np.ndarray]:
    """(clip ids in the database without a vector, vector ids without a database row)."""
    db_ids = np.fromiter(session.scalars(select(Clip.id)), dtype=np.int64)
    faiss_ids = store.ids()
    return np.setdiff1d(db_ids, faiss_ids), np.setdiff1d(faiss_ids, db_ids)


def reconcile(sessions: sessionmaker, store: VectorStore) -> dict:
    """Repair the index in place (the caller holds the indexer lock); returns what was done.
    The caller saves the store if `removed_vectors` > 0."""
    with sessions.begin() as s:
        missing, orphans = disagreement(s, store)
        videos = []
        if len(missing):
            videos = list(s.scalars(select(Clip.video_id).where(Clip.id.in_(missing.tolist())).distinct()))
            # the whole video goes, so it is re-queued as one piece; its other vectors go too
            other = list(s.scalars(select(Clip.id).where(Clip.video_id.in_(videos))))
            orphans = np.union1d(orphans, np.intersect1d(np.asarray(other, np.int64), store.ids()))
            delete_videos(s, videos)
    testpoint("reconciled-db")
    removed = store.remove(orphans) if len(orphans) else 0
    if len(videos) or removed:
        log.warning("repaired the index after an interrupted run: re-queued %d video(s), "
                    "removed %d stray vector(s)", len(videos), removed)
    return {"requeued_videos": len(videos), "removed_vectors": int(removed)}
