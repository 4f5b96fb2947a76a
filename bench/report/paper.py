"""Rows of Table 2 of the Chirality-in-Action paper, quoted for context, checked against the paper's text."""
from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_PAPER = Path("/work/shared/seeds/chirality-in-action-paper.txt")  # the paper as plain text

# rows quoted verbatim (line as in the paper's text; parsed columns)
PAPER_TABLE2 = [
    ("Chance - - - 50.0 50.0 50.0", ("Chance", "-", "-", "-", "50.0", "50.0", "50.0")),
    ("CLIP [63] ViT-B/16 Average 512 53.5 63.4 54.7",
     ("CLIP", "ViT-B/16", "Average", "512", "53.5", "63.4", "54.7")),
    ("CLIP [63] ViT-B/16 Concat. 8192 71.6 71.6 67.7",
     ("CLIP", "ViT-B/16", "Concat.", "8192", "71.6", "71.6", "67.7")),
    ("DINOv2 [54] ViT-S/14 Concat. 6144 79.7 74.1 65.8",
     ("DINOv2", "ViT-S/14", "Concat.", "6144", "79.7", "74.1", "65.8")),
    ("VideoMAE [77] ViT-L/16x16x2 Average 1024 80.3 70.5 59.1",
     ("VideoMAE", "ViT-L/16x16x2", "Average", "1024", "80.3", "70.5", "59.1")),
    ("VideoJEPA [5] ViT-L/16x16x2 Average 1024 80.4 67.4 56.4",
     ("VideoJEPA", "ViT-L/16x16x2", "Average", "1024", "80.4", "67.4", "56.4")),
    ("VideoMAE [77] ViT-L/16x16x2 Time concat. 8192 85.7 75.0 66.1",
     ("VideoMAE", "ViT-L/16x16x2", "Time concat.", "8192", "85.7", "75.0", "66.1")),
    ("LiFT (Ours) ViT-S/14 Learned 768 86.6 75.5 69.5",
     ("LiFT (Ours)", "ViT-S/14", "Learned", "768", "86.6", "75.5", "69.5")),
]


def table2(paper: Path) -> list[dict]:
    """The quoted rows, each checked to occur verbatim in the paper's text when that file is there."""
    if paper.is_file():
        # the paper's text has non-breaking spaces in places: compare with all whitespace as plain spaces
        text = re.sub(r"\s", " ", paper.read_text())
        for line, _ in PAPER_TABLE2:
            if line not in text:
                raise SystemExit(f"quoted row not found verbatim in {paper}: {line}")
    else:
        log.warning("%s not found (--paper FILE): Table 2's quoted rows are not checked against it", paper)
    return [{"line": line, "columns": cols} for line, cols in PAPER_TABLE2]
