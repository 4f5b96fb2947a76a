"""The indexer: scan -> decode -> embed -> store, incremental and resumable (see pipeline.py)."""

# Max epochs of `--lift fit` (here, not in pipeline.py, so that the CLI's --help needs no torch import).
# On the 160-clip chiral benchmark (docs/evaluation.md) a LiFT trained 100 epochs retrieved better than one
# trained 300 (same data and seed: chiral top-1 98.8% vs 97.5%; on 480 clips of unseen scenes 97.5% vs
# 95.4%), equal on the demo library (95.0% / 100%), in a third of the time.
FIT_EPOCHS = 100

# Weight of the chord anchor (lift.train.TrainConfig.anchor) in `--lift fit` and `lift-search train`: z_d is
# pulled towards the net change of the (L2-normalised) frames, last minus first, projected on the library's
# top-d chord directions, so that one direction of change reads the same in every scene (docs/evaluation.md, section 3). lift.train's own default is 0,
# the paper's loss.
FIT_ANCHOR = 10.0
