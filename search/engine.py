"""SearchEngine: query an index by an indexed clip or by any video file.

A stored descriptor is [m | dyn] (lift.LiFT.describe), both halves unit length. A query with motion
weight w in [0, 1] searches with [(1 - w) m_q | w * (+/-) dyn_q], so a result's score is
    score = (1 - w) * cos(m_q, m_r) + w * cos(+/- dyn_q, dyn_r)
with the minus sign for a reverse ("opposite action") query. Both parts are returned with each hit.
Scores are always exact; on a large index the candidates come from an approximate (IVF) index and are
re-scored against the stored vectors (indexer/store.py), so only recall is approximate (`exact=True`
searches by brute force).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import DBAPIError

from db import Clip as ClipRow
from db import Failure, MetadataDbError, Video, all_settings, clip_rows, has_column, open_db
from db.schema import bytes_form
from indexer.decode import READ_MODES
from indexer.library import IndexDir, VideoFeatures
from indexer.lock import IndexLock, IndexLocked
from indexer.reconcile import disagreement, reconcile
from indexer.segments import MANIFEST
from indexer.store import VectorStore
from lift.config import DECODE_TIMEOUT_S, MOTION_WEIGHT, OVERLAP_MODES, SEARCH_K, Sampling
from lift.errors import CheckpointError, EmptyIndexError, IndexNotFoundError, LiftSearchError
from lift.files import SAFETENSORS_META_KEY, safetensors_metadata

log = logging.getLogger(__name__)
_EPS = 1e-6  # seconds: windows that only touch do not overlap


class SearchError(LiftSearchError, ValueError):
    """Bad query input (unknown clip, bad weight, unreadable video); the message says which."""


class UnknownClipError(SearchError, LookupError):
    """No clip with that id is served by this engine."""


class UnreadableVideoError(SearchError):
    """A query video that does not decode (not a video, damaged, no frames)."""


class MediaUnavailableError(SearchError):
    """A clip's video file is gone, or lies outside the indexed folders: it is not served."""


@dataclass(frozen=True)
class Clip:
    clip_id: int
    video_path: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Hit:
    clip_id: int
    video_path: str
    start_s: float
    end_s: float
    score: float
    static_score: float = 0.0   # cos of the static (appearance) parts
    dynamic_score: float = 0.0  # cos of the dynamic (motion) parts, after negation for a reverse query
    rank: int = 0

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6), "static_score": round(self.static_score, 6),
                "dynamic_score": round(self.dynamic_score, 6), "clip_id": self.clip_id,
                "video_path": self.video_path, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3)}


class SearchEngine:
    """Searches one index. The LiFT model and the backbone are loaded on first use: a query by clip id
    needs neither (nor torch)."""

    def __init__(self, idx: IndexDir, sessions, store: VectorStore, settings: dict, device: str = "cpu",
                 backbone_weights: str | Path | None = None, hidden: set[int] | None = None):
        self.idx, self.sessions, self.store, self.settings = idx, sessions, store, settings
        self.device, self.backbone_weights = device, backbone_weights
        self.dim = store.dim
        self._db = sessions.kw["bind"]  # (a plain connection for the lookups of every search: no ORM session)
        if hidden is None:
            with sessions() as s:
                missing, orphans = disagreement(s, store)  # (cheap while they agree: counts first)
            hidden = set(missing.tolist()) | set(orphans.tolist())
        self._hidden = hidden  # ids in only one of the database and the store: never served
        # clips an indexer adds later have higher ids (never reused): the database is read up to this one,
        # so that the engine lists exactly the clips whose vectors it holds
        self._last_id = store.stats()[1]
        self._backbone = None

    @classmethod
    def open(cls, index_dir: str | Path, device: str = "cpu",
             backbone_weights: str | Path | None = None) -> "SearchEngine":
        """Open an index for searching (repairing what a crashed indexer left, when no indexer runs).
        backbone_weights: the file of the index's backbone weights, where it moved since indexing."""
        idx = IndexDir(index_dir)
        if not idx.exists():
            raise IndexNotFoundError(f"no lift-search index at {idx.root}: build one with "
                                     f"`lift-search index VIDEOS_DIR --index {idx.root}`")
        sessions = open_db(idx.db)
        with sessions() as s:
            settings = all_settings(s)
        if settings.get("dim") is None or not ((idx.vectors / MANIFEST).exists() or idx.legacy_vectors.exists()):
            raise EmptyIndexError(f"the index at {idx.root} holds no vectors yet: its first `lift-search index` "
                                  f"run has not finished a checkpoint")
        dim = settings["dim"]
        store = VectorStore.open(idx.vectors, dim, legacy=idx.legacy_vectors)  # refuses files we did not write
        with sessions() as s:
            missing, orphans = disagreement(s, store)
        hidden = set()
        if len(missing) or len(orphans):
            hidden = None  # (found again once repaired, or not)
            # a crashed indexer's leftovers, or an indexer at work now: repair only if none is running
            # (its lock is free); otherwise __init__ hides the disagreeing ids. The lock is taken only
            # here, so that opening a sound index never keeps an indexer from starting.
            try:
                with IndexLock(idx.root):
                    store = VectorStore.open(idx.vectors, dim, writable=True, legacy=idx.legacy_vectors)
                    if reconcile(open_db(idx.db, write=True), store)["removed_vectors"]:
                        store.commit()
            except IndexLocked:
                pass
            except (OSError, DBAPIError, MetadataDbError) as e:  # read-only folder, disk or database: ids hidden
                log.info("cannot repair the index %s (%s): serving it without repairs", idx.root, e)
        if "lift_hash" not in store.meta:
            raise EmptyIndexError(f"the index at {idx.root} holds no vectors yet")
        model = idx.model_path(store.meta["lift_hash"])
        if not model.is_file() or SAFETENSORS_META_KEY not in (safetensors_metadata(model) or {}):
            raise CheckpointError(f"Refusing to load {model}: it is not the LiFT model this index wrote (a "
                                  f"lift-search safetensors file); it is missing or was replaced. Rebuild the "
                                  f"index's model with `lift-search index ... --refit`.")
        return cls(idx, sessions, store, settings, device, backbone_weights, hidden)

    @cached_property
    def model(self):
        """The LiFT that made the index's vectors (loaded on first use)."""
        from lift.checkpoint import load_checkpoint

        return load_checkpoint(self.idx.model_path(self.store.meta["lift_hash"])).to(self.device).eval()

    # ---- library ----------------------------------------------------------------------------
    def served_ids(self) -> set[int]:
        """The clip ids this engine serves: those with both a vector and a database row when it was
        opened (while an indexer is between its two writes, the others are hidden, never served)."""
        return set(self.store.ids().tolist()) - self._hidden

    @property
    def hidden_ids(self) -> frozenset[int]:
        """Ids in only one of the database and the vectors when the engine was opened: never served."""
        return frozenset(self._hidden)

    def clips(self) -> list[Clip]:
        """Every served clip, by file and start (the whole library: page a large one with `clip_page`)."""
        return self.clip_page(0, None, order="path")

    def _library(self, columns, within: Sequence[str | Path] | None = None, folder: str | None = None,
                 text: str | None = None, length: tuple[float, float] | None = None):
        """A query over the served clips joined with their videos, filtered: `within` folders the video lies
        under (at any depth), `folder` the folder it lies in (directly), `text` a part of its path
        (case-insensitive), `length` (min, max) seconds. Ids are never reused and an indexer commits rows
        before vectors, so the rows with an id up to the largest in the vectors at opening, less the hidden
        ones, are the served clips whose rows still exist (a video deleted since is not listed). Written so
        that SQLite walks the videos' path index and each video's clips (no sort of the whole library for a
        page by path): from videos, and `id + 0` keeps the id bound from choosing the clips' primary key."""
        q = select(*columns).select_from(Video).join(ClipRow, ClipRow.video_id == Video.id)
        q = q.where(ClipRow.id + 0 <= self._last_id)
        if within:
            q = q.where(self._under(within))
        if folder is not None:  # videos directly in `folder`: a range of the path index, then the parent
            parent = func.rtrim(Video.path, func.replace(Video.path, "/", ""))  # the path up to its last "/"
            q = q.where(or_(*[and_(Video.path >= p, Video.path < p[:-1] + "0", parent == p)
                              for p in (folder.rstrip("/") + "/", bytes_form(folder.rstrip("/") + "/"))]))
        if text:
            q = q.where(func.lower(Video.path).contains(text.lower(), autoescape=True))
        if length is not None:
            q = q.where((ClipRow.end_s - ClipRow.start_s).between(length[0] - 1e-6, length[1] + 1e-6))
        if self._hidden:
            q = q.where(ClipRow.id.not_in(sorted(self._hidden)))
        return q

    def clip_page(self, offset: int = 0, limit: int | None = 100, within: Sequence[str | Path] | None = None,
                  folder: str | None = None, text: str | None = None, length: tuple[float, float] | None = None,
                  order: str = "id") -> list[Clip]:
        """`limit` served clips (None: all) from the `offset`-th on, filtered as `count`, ordered by id
        (`order="id"`: stable while an indexer adds clips) or by video path, then time (`order="path"`): one
        SQL query, whatever the library's size."""
        if offset < 0 or (limit is not None and limit < 1):
            raise SearchError(f"a page needs offset >= 0 and limit >= 1, got offset {offset}, limit {limit}")
        if order not in ("id", "path"):
            raise SearchError(f"a page is ordered by id or path, not {order!r}")
        q = self._library((ClipRow.id, Video.path, ClipRow.start_s, ClipRow.end_s), within, folder, text, length)
        q = q.order_by(*((Video.path, ClipRow.id) if order == "path" else (ClipRow.id,))).offset(offset).limit(limit)
        with self.sessions() as s:
            return [Clip(*r) for r in s.execute(q)]

    def count(self, within: Sequence[str | Path] | None = None, folder: str | None = None, text: str | None = None,
              length: tuple[float, float] | None = None) -> int:
        """How many clips `clip_page` pages through (those under `within`, in `folder`, whose path contains
        `text`, of that `length`)."""
        if not within and folder is None and not text and length is None:  # the clips' id index alone
            q = select(func.count(ClipRow.id)).where(ClipRow.id <= self._last_id)
            if self._hidden:
                q = q.where(ClipRow.id.not_in(sorted(self._hidden)))
        else:
            q = self._library((func.count(ClipRow.id),), within, folder, text, length)
        with self.sessions() as s:
            return s.scalar(q)

    def folders(self) -> list[str]:
        """The folders holding indexed videos (each video's parent folder), sorted."""
        parent = func.rtrim(Video.path, func.replace(Video.path, "/", ""))  # the path up to its last "/"
        with self.sessions() as s:
            return sorted({str(Path(p)) for p in s.scalars(select(parent).distinct()) if p})

    def length_range(self) -> tuple[float, float]:
        """(shortest, longest) clip in seconds."""
        length = ClipRow.end_s - ClipRow.start_s
        with self.sessions() as s:
            lo, hi = s.execute(select(func.min(length), func.max(length))).one()
        return float(lo or 0.0), float(hi or 0.0)

    def descriptor(self, clip_id: int) -> np.ndarray:
        """The stored descriptor [m | dyn] (2d,) float32 of an indexed clip."""
        self.clip(clip_id)  # raises for an unknown or hidden id
        return self.store.vectors([int(clip_id)])[0]

    def clip(self, clip_id: int) -> Clip:
        row = clip_rows(self._db, [clip_id]).get(int(clip_id))
        if row is None or row[0] in self._hidden or row[0] > self._last_id:
            raise UnknownClipError(f"no clip with id {clip_id} in this index")
        return Clip(*row)

    def failures(self) -> list[tuple[str, str]]:
        with self.sessions() as s:
            return [(f.path, f.reason) for f in s.scalars(select(Failure).order_by(Failure.path))]

    @property
    def sampling(self) -> Sampling:
        return Sampling(**self.settings["sampling"])

    # ---- search -----------------------------------------------------------------------------
    def search_clip(self, clip_id: int, k: int = SEARCH_K, reverse: bool = False, motion: float = MOTION_WEIGHT,
                    within: Sequence[str | Path] | None = None, overlap: str = "distinct",
                    exact: bool = False) -> list[Hit]:
        """Clips like an indexed clip (itself excluded; with overlap="distinct", so are the windows of its
        own video that overlap it: they show the same moment). `exact`: brute force, even where an
        approximate index serves (its scores are exact either way; only recall differs)."""
        query = self.clip(clip_id)  # raises for an unknown id
        vec = self.store.vectors([int(clip_id)])[0]
        return self._search(vec, k, reverse, motion, within, overlap, query=query, exact=exact)

    def search_video(self, path: str | Path, k: int = SEARCH_K, reverse: bool = False,
                     motion: float = MOTION_WEIGHT, within: Sequence[str | Path] | None = None,
                     overlap: str = "distinct", start_s: float | None = None, end_s: float | None = None,
                     exact: bool = False) -> list[Hit]:
        """Clips like a video file, or like its segment [start_s, end_s) (seconds; either may be left out)."""
        return self._search(self.describe_video(path, start_s, end_s), k, reverse, motion, within, overlap,
                            exact=exact)

    def search_features(self, seq: np.ndarray, k: int = SEARCH_K, reverse: bool = False,
                        motion: float = MOTION_WEIGHT, within: Sequence[str | Path] | None = None,
                        overlap: str = "distinct") -> list[Hit]:
        """`search_video` from a query's per-frame features (T, D) (see `video_features`), without decoding
        the file again."""
        vec = self.model.describe(np.asarray(seq, dtype=np.float32)[None])[0].cpu().numpy()
        return self._search(vec, k, reverse, motion, within, overlap)

    def describe_video(self, path: str | Path, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
        """Embed a video file (or its segment) with the index's own backbone and LiFT, as one clip."""
        seq = self.video_sequence(path, start_s, end_s)
        return self.model.describe(seq[None].to(self.model.feature_mean.device))[0].cpu().numpy()

    def video_sequence(self, path: str | Path, start_s: float | None = None, end_s: float | None = None):
        """The (T, D) backbone features of a query: the whole file, sampled as the index samples a video of
        up to max_single_s seconds (a longer one is refused: pick a segment), or its segment [start_s, end_s),
        sampled as the index samples a window (so a segment that is an indexed window gives its frames)."""
        import torch

        from indexer.decode import DecodePool

        segment = None
        if start_s is not None or end_s is not None:
            start, end = float(start_s or 0.0), float("inf") if end_s is None else float(end_s)
            if not (start >= 0 and end > start):
                raise SearchError(f"a segment needs 0 <= start < end (seconds), got start {start_s}, end {end_s}")
            segment = (start, end)
        backbone = self.backbone()
        whole = replace(self.sampling, max_single_s=float("inf"))  # a whole file: one clip (16 frames)
        with DecodePool(workers=1, timeout_s=DECODE_TIMEOUT_S, short_side=backbone.preprocess.resize,
                        sampling=whole) as pool:
            decoded = next(pool.imap([str(path)], segments=[segment]))
        if decoded.error or not decoded.plans:
            raise UnreadableVideoError(f"cannot use {path} as a query: {decoded.error or 'no frames'}")
        if segment is None and decoded.info.duration_s > self.sampling.max_single_s + 1e-9:
            raise SearchError(
                f"{path} is {decoded.info.duration_s:.1f} s long: 16 frames spread over all of it would describe "
                f"no moment (the index cuts videos longer than {self.sampling.max_single_s:g} s into "
                f"{self.sampling.window_s:g} s windows). Choose a segment of it: --start/--end seconds on the "
                f"command line, start_s/end_s in the API.")
        feats = backbone.encode_frames(decoded.frames)
        pos = {int(f): i for i, f in enumerate(decoded.frame_indices)}
        return torch.as_tensor(feats[[pos[f] for f in decoded.plans[0].frame_indices]])  # (T, D)

    def video_info(self, path: str | Path):
        """A video file's stream facts (indexer.clips.VideoInfo: frames, fps, size, duration_s), read by a
        decoder worker (a hostile file cannot take this process down)."""
        from indexer.decode import DecodePool

        with DecodePool(workers=1, timeout_s=DECODE_TIMEOUT_S, short_side=16, sampling=self.sampling) as pool:
            decoded = next(pool.imap([str(path)], segments=[(0.0, 0.0)]))  # one frame decoded
        if decoded.error or decoded.info is None:
            raise UnreadableVideoError(f"cannot use {path} as a query: {decoded.error or 'no frames'}")
        return decoded.info

    def backbone(self):
        """The backbone that made the index's features, rebuilt from its record (name, weights digest and
        source, preprocessing): a query video is embedded exactly as the library was."""
        if self._backbone is None:
            record = self.settings.get("backbone_record")
            if record is None:
                raise SearchError(
                    f"the index at {self.idx.root} was built by an earlier lift-search, which did not record "
                    f"which weights and preprocessing its backbone ({self.settings.get('backbone')}) used: a "
                    f"query video cannot be embedded the way its clips were. Clip queries (--clip) work; run "
                    f"`lift-search index` on it once (it records the weights it uses) to enable video queries.")
            from lift.backbones import backbone_from_record

            self._backbone = backbone_from_record(record, device=self.device, weights=self.backbone_weights)
        return self._backbone

    @staticmethod
    def _under(folders: Sequence[str | Path]):
        """SQL: the video lies under any of ``folders`` (at any depth)."""
        conditions = []
        for folder in folders:
            prefix = os.path.join(os.path.normpath(os.path.abspath(os.fspath(folder))), "")
            conditions.append(Video.path.startswith(prefix, autoescape=True))
            conditions.append(Video.path.startswith(bytes_form(prefix), autoescape=True))  # non-UTF-8 names
        return or_(*conditions)

    def within_ids(self, folders: Sequence[str | Path]) -> np.ndarray:
        """The served clip ids of the videos under any of ``folders`` (at any depth)."""
        with self.sessions() as s:
            ids = np.fromiter(s.scalars(select(ClipRow.id).join(Video).where(self._under(folders),
                                                                          ClipRow.id <= self._last_id)), np.int64)
        ids = ids[~np.isin(ids, np.fromiter(self._hidden, np.int64, len(self._hidden)))]
        if not len(ids):
            raise SearchError("no indexed clip lies under " + ", ".join(str(f) for f in folders))
        return ids

    def _search(self, vec: np.ndarray, k: int, reverse: bool, motion: float, within, overlap: str,
                query: Clip | None = None, exact: bool = False) -> list[Hit]:
        """The best k hits for descriptor ``vec``: exact scores, the query clip excluded, only clips under
        ``within``; with overlap="distinct", no two hits (nor a hit and the query clip) overlap in time in
        one video: each such group is its best window. Candidates are fetched in growing rounds until k
        distinct hits are found or the candidates run out."""
        if not 0.0 <= motion <= 1.0:
            raise SearchError(f"motion weight must be within [0, 1], got {motion}")
        if k < 1:
            raise SearchError(f"k must be at least 1, got {k}")
        if overlap not in OVERLAP_MODES:
            raise SearchError(f"overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap!r}")
        d = self.dim // 2
        m, dyn = vec[:d], (-vec[d:] if reverse else vec[d:])
        weighted = np.concatenate([(1 - motion) * m, motion * dyn])[None].astype(np.float32)
        allowed = self.within_ids(within) if within else None
        available = len(allowed) if allowed is not None else len(self.store)
        n = (4 * k if overlap == "distinct" else k) + 1 + len(self._hidden)  # (overlapping windows drop out)
        while True:
            _, found = self.store.search(weighted, n, allowed, exact=exact)
            ids = [int(i) for i in found[0] if i >= 0 and i not in self._hidden and (query is None or i != query.clip_id)]
            hits = self._hits(ids, m, dyn, motion)
            if overlap == "distinct":
                hits = distinct_moments(hits, query)
            if len(hits) >= k or n >= available:
                break
            n *= 4
        return [replace(h, rank=r + 1) for r, h in enumerate(hits[:k])]

    def _hits(self, ids: list[int], m: np.ndarray, dyn: np.ndarray, motion: float) -> list[Hit]:
        """Hits for ``ids``, scored exactly from the stored vectors, best first."""
        if not ids:
            return []
        d = self.dim // 2
        stored = self.store.vectors(ids)                       # (n, 2d)
        static, dynamic = (stored[:, :d] * m).sum(1), (stored[:, d:] * dyn).sum(1)  # (no BLAS threads for a few rows)
        rows = clip_rows(self._db, ids)  # one query (clip and video rows joined), not one per hit
        hits = [Hit(*rows[i], float((1 - motion) * st + motion * dy), float(st), float(dy))
                for i, st, dy in zip(ids, static, dynamic) if i in rows]
        hits.sort(key=lambda h: -h.score)
        return hits


    # ---- for explanations and the UI -------------------------------------------------------
    def clip_features(self, clip_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(per-frame features (T, D), LiFT's straight-line reconstruction (T, D)) of an indexed clip."""
        with self.sessions() as s:
            row = s.get(ClipRow, int(clip_id))
            if row is None or row.id in self._hidden:
                raise UnknownClipError(f"no clip with id {clip_id} in this index")
            vf, ordinal = VideoFeatures.load(self.idx.root / row.video.features), row.ordinal
        seq = vf.clip_sequences()[ordinal]
        return seq, self.model.reconstruct(seq[None])[0].cpu().numpy()

    def thumbnail(self, clip_id: int) -> np.ndarray:
        with self.sessions() as s:
            row = s.get(ClipRow, int(clip_id))
            if row is None or row.id in self._hidden:
                raise UnknownClipError(f"no clip with id {clip_id} in this index")
            vf, ordinal = VideoFeatures.load(self.idx.root / row.video.features), row.ordinal
        return vf.thumbs[ordinal]

    def video_file(self, clip_id: int) -> Path:
        """The file of an indexed clip, for playing it: looked up by clip id only, and served only if it
        still lies inside one of the indexed folders once every symlink is resolved."""
        path = Path(self.clip(clip_id).video_path)
        real = path.resolve()
        roots = [Path(r).resolve() for r in self.settings.get("roots", [])]
        if not any(real.is_relative_to(r) for r in roots) or not real.is_file():
            raise MediaUnavailableError(f"clip {clip_id}: its file is gone or lies outside the indexed folders")
        return real

    def status(self) -> dict:
        with self.sessions() as s:
            counts = {"videos": s.scalar(select(func.count(Video.id))),
                      "clips": s.scalar(select(func.count(ClipRow.id))),
                      "failures": s.scalar(select(func.count(Failure.id)))}
            modes = dict(s.execute(select(Video.read_mode, func.count()).group_by(Video.read_mode)).all()) \
                if has_column(s, Video.__tablename__, "read_mode") else {None: counts["videos"]}
        # how the videos' frames were read: "sequential" ones are files whose seeks land on wrong frames;
        # "unknown" ones were indexed before this was recorded
        read_modes = {m: modes.get(m, 0) for m in READ_MODES} | {"unknown": modes.get(None, 0)}
        return {"index": str(self.idx.root), "metadata": str(self.idx.db), **counts, "vectors": len(self.store),
                "read_modes": read_modes, "search": self.store.describe(), "disk_bytes": _disk_bytes(self.idx.root),
                "failure_reasons": [{"path": p, "reason": r} for p, r in self.failures()],
                "backbone": self.settings.get("backbone"), "backbone_record": self.settings.get("backbone_record"),
                "lift": self.settings.get("lift"),
                "sampling": self.settings.get("sampling"), "dim": self.dim, "roots": self.settings.get("roots"),
                "created_at": self.settings.get("created_at"), "updated_at": self.settings.get("updated_at")}

    # ---- an uploaded query: decoded once, then searched and explained from its features --------
    def video_features(self, path: str | Path, start_s: float | None = None,
                       end_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(per-frame features (T, D), LiFT's straight-line reconstruction (T, D)) of a video file (or its
        segment) used as one clip, as `clip_features` gives them for an indexed clip."""
        seq = self.video_sequence(path, start_s, end_s)
        return seq.cpu().numpy(), self.model.reconstruct(seq[None])[0].cpu().numpy()


def distinct_moments(hits: list[Hit], query: Clip | None = None) -> list[Hit]:
    """``hits`` (best first) without those that overlap in time, in the same video, a better hit or the
    query clip: each moment of a video is shown once, by its best window."""
    taken: dict[str, list[tuple[float, float]]] = {}
    if query is not None:
        taken[query.video_path] = [(query.start_s, query.end_s)]
    out = []
    for h in hits:
        spans = taken.setdefault(h.video_path, [])
        if all(h.end_s <= a + _EPS or h.start_s >= b - _EPS for a, b in spans):
            spans.append((h.start_s, h.end_s))
            out.append(h)
    return out


def search_summary(d: dict) -> str:
    """How an index serves searches, in words, from `status()["search"]` (VectorStore.describe)."""
    where = f"{d['vectors']} vectors in {d['segments']} segment(s), {d['bytes'] / 1e6:.1f} MB"
    if d["search"] == "ivf":
        return (f"approximate {d['index']} (trained on {d['trained_on']} vectors; {d['nprobe']} lists probed, "
                f"{d['candidates']} candidates re-scored exactly), {where}; --ann {d['mode']}")
    return f"exact (brute force), {where}; --ann {d['mode']}"


def _disk_bytes(root: Path) -> int:
    """Bytes of the files under `root` (os.scandir: no path objects for a library's many feature files)."""

    total, stack = 0, [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            total += e.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:  # an indexer replaced it meanwhile
                        pass
        except FileNotFoundError:
            pass
    return total
