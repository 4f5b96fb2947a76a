"""Fixed-shape batches of frames across videos, for torch tensors and numpy arrays alike (no torch import)."""
from __future__ import annotations

from collections.abc import Callable, Iterator


def fixed_batches(videos: list, batch_size: int, preprocess: Callable, cat: Callable, pad: Callable) -> Iterator:
    """The preprocessed frames of all ``videos`` one after another, cut into batches of exactly ``batch_size``
    frames, the last padded: ``preprocess(frames)`` -> rows, ``cat(list of rows)`` -> rows, ``pad(rows, k)`` ->
    rows with k zero rows after them. Every model call has the same shape, so a frame's features never depend on
    which frames share its batch (checked in tests/test_stages.py: bit-identical on the CPU)."""
    held, n = [], 0
    for frames in videos:
        for i in range(0, len(frames), batch_size):
            held.append(preprocess(frames[i:i + batch_size]))
            n += len(held[-1])
            while n >= batch_size:
                x = cat(held) if len(held) > 1 else held[0]
                yield x[:batch_size]
                held, n = [x[batch_size:]], n - batch_size
    if n:
        yield pad(cat(held), batch_size - n)
