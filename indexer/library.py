"""The index directory and its per-video feature cache, shared by the indexer, search and the UI.

    IDX/index.db                  SQLite metadata (db/), by default
    IDX/metadata.json             where the metadata lives otherwise (`index --db URL`): the URL, never
                                  with a password, and the index's own PostgreSQL schema
    IDX/vectors/                  clip descriptors (store.py): segments listed by manifest.json, which names
                                  the LiFT weights used (IDX/vectors.faiss in indexes of lift-search 0.1)
    IDX/models/<hash>.safetensors LiFT weights, named by content hash
    IDX/features/<hash>.npz       per video: decoded frame indices, backbone features, clip plans,
                                  thumbnails; so nothing is ever decoded twice
    IDX/indexer.lock              held by a running indexer
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lift.files import atomic_write

from .clips import ClipPlan, VideoInfo

if TYPE_CHECKING:
    from db import Database

THUMB_HEIGHT = 96


class IndexDir:
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        self.sqlite = self.root / "index.db"
        self.metadata_file = self.root / "metadata.json"
        self.vectors = self.root / "vectors"                 # the vector store's folder
        self.legacy_vectors = self.root / "vectors.faiss"    # lift-search 0.1's single file, migrated when met
        self.models = self.root / "models"
        self.features = self.root / "features"

    def model_path(self, weights_hash: str) -> Path:
        return self.models / f"{weights_hash}.safetensors"

    def features_path(self, content_hash: str) -> Path:
        return self.features / f"{content_hash}.npz"

    def exists(self) -> bool:
        return self.sqlite.is_file() or self.metadata_file.is_file()

    @property
    def db(self) -> Database:
        """Where this index's metadata lives: as metadata.json records, else the SQLite file index.db."""
        from db import Database, MetadataDbError  # (SQLAlchemy: not for a Ray actor that caches features here)

        if not self.metadata_file.is_file():
            return Database.sqlite(self.sqlite)
        try:
            record = json.loads(self.metadata_file.read_text())
            return Database.parse(record["url"], record.get("schema"))
        except (ValueError, KeyError, TypeError) as e:
            raise MetadataDbError(f"{self.metadata_file} is damaged ({e!r}); it names the database that holds "
                                  f"this index's metadata") from None
        except MetadataDbError as e:
            raise MetadataDbError(f"{self.metadata_file}: {e}") from None

    def choose_db(self, url: str | None) -> Database:
        """The database an index run writes (the caller holds the indexer lock): an existing index's own,
        which `url` may only repeat; for a new index the one at `url` (on PostgreSQL in a new schema of its
        own; recorded in metadata.json first, so that a run killed before its first commit comes back to
        it), or by default index.db."""
        from db import Database, MetadataDbError
        from db.location import new_schema

        if url is None:
            return self.db
        asked = Database.parse(url)
        if self.exists():
            own = self.db
            if not asked.same_server_and_database(own):
                raise MetadataDbError(f"the index at {self.root} keeps its metadata in {own}, not {asked}: --db "
                                      f"only chooses where a new index keeps it (leave it out, or use another "
                                      f"--index folder)")
            return own
        if asked.same_server_and_database(Database.sqlite(self.sqlite)):
            return self.db  # the default, said out loud
        if asked.backend == "postgresql":
            asked = Database(asked.url, new_schema(self.root))
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.metadata_file) as f:
            f.write(json.dumps(asked.record(), indent=1).encode() + b"\n")
        return asked


@dataclass
class VideoFeatures:
    info: VideoInfo
    plans: list[ClipPlan]
    frame_indices: np.ndarray  # (n,) sorted unique frame numbers
    feats: np.ndarray          # (n, D) float32 backbone features of those frames
    thumbs: np.ndarray         # (n_clips, h, w, 3) uint8: each clip's middle frame
    read_mode: str | None = None  # how the frames were read (indexer.decode.READ_MODES); None: not recorded

    def clip_sequences(self) -> np.ndarray:
        """(n_clips, T, D): each clip's frames, gathered from the cached per-frame features."""
        pos = {int(f): i for i, f in enumerate(self.frame_indices)}
        rows = np.array([[pos[f] for f in p.frame_indices] for p in self.plans])  # (n_clips, T)
        return self.feats[rows]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"info": asdict(self.info), "plans": [asdict(p) for p in self.plans],
                           "read_mode": self.read_mode})
        with atomic_write(path) as f:
            np.savez(f, frame_indices=self.frame_indices, feats=self.feats.astype(np.float32),
                     thumbs=self.thumbs, meta=np.frombuffer(meta.encode(), np.uint8))

    @staticmethod
    def count_clips(path: Path) -> int:
        """How many clips the file holds (reads its small metadata member only)."""
        with np.load(path, allow_pickle=False) as z:
            return len(json.loads(z["meta"].tobytes())["plans"])

    @classmethod
    def load(cls, path: Path) -> "VideoFeatures":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            plans = [ClipPlan(p["start_s"], p["end_s"], tuple(p["frame_indices"])) for p in meta["plans"]]
            return cls(VideoInfo(**meta["info"]), plans, z["frame_indices"], z["feats"], z["thumbs"],
                       meta.get("read_mode"))
