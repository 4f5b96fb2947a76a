"""The command line: defaults from one definition (lift.config), clear one-line errors for what the user can
fix, tracebacks for bugs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lift.config import DECODE_TIMEOUT_S, IndexOptions, Sampling, TrainConfig
from search import cli

ROOT = Path(__file__).resolve().parent.parent


def help_text(*verb: str) -> str:
    for action in cli.build_parser()._subparsers._group_actions:
        parser = action.choices[verb[0]]
        options = parser.format_help().split("options:", 1)[1]  # (not the usage line)
        return " ".join(options.split())  # one line: argparse wraps where it likes


def default_of(text: str, flag: str) -> str:
    m = re.search(re.escape(flag) + r" \S+ .*?\(default ([^)]+)\)", text)
    assert m, f"{flag} shows no default"
    return m.group(1)


def test_train_and_index_show_the_same_training_defaults_from_one_definition():
    index, train = help_text("index"), help_text("train")
    for flag, name, _ in cli.TRAIN_OPTIONS:
        assert default_of(index, flag) == default_of(train, flag) == f"{getattr(TrainConfig, name):g}", flag


def test_index_help_reads_its_other_defaults_from_the_config():
    text = help_text("index")
    assert float(default_of(text, "--window")) == Sampling.window_s
    assert float(default_of(text, "--stride")) == Sampling.stride_s
    assert float(default_of(text, "--max-single")) == Sampling.max_single_s
    assert float(default_of(text, "--timeout")) == DECODE_TIMEOUT_S
    assert int(default_of(text, "--workers")) == IndexOptions().workers


def test_train_and_index_build_the_same_recipe_unless_told_otherwise():
    parser = cli.build_parser()
    a = parser.parse_args(["train", "x.npy", "--out", "m.safetensors"])
    b = parser.parse_args(["index", "videos", "--index", "idx"])
    (ta, given_a), (tb, given_b) = cli.train_config(a), cli.train_config(b)
    assert ta == tb == TrainConfig() and given_a == given_b == ()
    c = parser.parse_args(["index", "videos", "--index", "idx", "--anchor", "0", "--epochs", "7"])
    tc, given = cli.train_config(c)
    assert (tc.anchor, tc.epochs, tc.latent_dim) == (0.0, 7, TrainConfig.latent_dim)
    assert given == ("--epochs", "--anchor")


def test_help_needs_no_torch():
    code = "import sys; from search.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    assert cli.main(["status", "--index", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no lift-search index" in err
    assert cli.main(["train", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "no feature file" in capsys.readouterr().err

    from search import SearchEngine

    def bug(*a, **k):
        raise ValueError("a bug deep in some library")

    monkeypatch.setattr(SearchEngine, "open", bug)
    with pytest.raises(ValueError, match="a bug deep"):  # not dressed up as the user's fault
        cli.main(["status", "--index", str(tmp_path)])


def test_an_index_without_vectors_says_so(tmp_path, capsys):
    from db import open_db
    from indexer.library import IndexDir
    from lift.errors import EmptyIndexError
    from search import SearchEngine

    idx = IndexDir(tmp_path / "idx")
    idx.root.mkdir()
    open_db(idx.db, write=True)  # created, nothing indexed yet
    with pytest.raises(EmptyIndexError, match="holds no vectors yet") as e:
        SearchEngine.open(idx.root)
    assert not isinstance(e.value, FileNotFoundError)
    assert cli.main(["search", "--index", str(idx.root), "--clip", "1"]) == 2
    assert "holds no vectors yet" in capsys.readouterr().err
