"""The chiral evaluation report behind docs/evaluation.md (entry point: bench/chiral_report.py).

Measuring, one module per step: library.py (render and index the benchmark libraries), evaluation.py (probe,
retrieval, checks), ablation.py (retrained LiFTs from the cached features), real.py (real-footage cuts),
paper.py (the paper's quoted Table 2). Rendering, from the data alone (docs/evaluation.json): findings.py
(derived numbers and sentences), markdown.py + markdown_results.py (the text), plots.py (the figures),
format.py (shared formatting). cli.py ties them together.
"""
from .cli import main, render_docs
from .findings import with_text
from .markdown import markdown

__all__ = ["main", "markdown", "render_docs", "with_text"]
