"""Reproduce docs/evaluation.md (the chiral benchmark, the CiA probe, chiral retrieval, the ablations);
`--help` lists the steps and options. The code is the package bench/report/.

    python bench/chiral_report.py --work /tmp/lift-eval          # everything (resumes what WORK holds)
    python bench/chiral_report.py --markdown-only                # re-render docs/ from docs/evaluation.json
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.report import main, markdown, with_text  # noqa: E402,F401  (markdown, with_text: tests/test_report.py)

if __name__ == "__main__":
    sys.exit(main())
