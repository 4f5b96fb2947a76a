"""Formatting shared by the report's markdown and its log lines."""
from __future__ import annotations


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal; '-' for none."""
    return "-" if x is None else f"{100 * x:.1f}"


def table(head: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def retrieval_head(k: int) -> list[str]:
    """The column titles of a retrieval result (see `retrieval_cells`)."""
    return ["fwd top-1", "rev top-1", "chiral", "both", f"fwd P@{k}", f"rev P@{k}"]


def retrieval_cells(r: dict, k: int) -> list[str]:
    """The cells of one retrieval result (a method, a motion weight or a group of `ev.run_retrieval`)."""
    return [pct(r["forward_top1"]), pct(r["reverse_top1"]), pct(r["chiral_top1"]), pct(r["both_top1"]),
            pct(r[f"forward_p@{k}"]), pct(r[f"reverse_p@{k}"])]


def bench_title(key: str) -> str:
    """How the docs name a benchmark: 'synth' is 'synthetic', the others keep their key."""
    return "synthetic" if key == "synth" else key
