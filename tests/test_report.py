"""docs/evaluation.md is made from docs/evaluation.json by bench/chiral_report.py, never edited by hand."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_report():
    spec = importlib.util.spec_from_file_location("chiral_report", ROOT / "bench" / "chiral_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluation_markdown_is_rendered_from_its_json():
    report = load_report()
    data = report.with_text(json.loads((ROOT / "docs" / "evaluation.json").read_text()))
    assert report.markdown(data) == (ROOT / "docs" / "evaluation.md").read_text(), (
        "docs/evaluation.md differs from what its JSON renders to: re-render it with "
        "`python bench/chiral_report.py --markdown-only` (or rerun the report), never by hand")



def test_cross_scene_tables_in_benchmarks_md_are_rendered_from_their_json():
    from bench.report.cross_scene import markdown

    data = json.loads((ROOT / "bench" / "results" / "cross_scene.json").read_text())
    assert markdown(data) in (ROOT / "docs" / "benchmarks.md").read_text(), (
        "docs/benchmarks.md's cross-scene tables differ from what bench/results/cross_scene.json renders to: "
        "paste the output of `python -m bench.report.cross_scene ...` (see its docstring), never edit them by hand")
