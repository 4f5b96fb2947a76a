"""`lift-search eval`: the CiA linear probe, chiral retrieval, and the labels CSV (search/evaluate.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lift.backbones import LITE0_CELLS
from search import evaluate as ev
from search.cli import main

# ---- helpers -----------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[dict], columns=("video", "group", "class", "split")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def library_rows(clips, absolute: bool = False) -> list[dict]:
    """The small library's clips as CSV rows: variant 0 trains, variant 1 tests (its own CSV has no test
    split, since it renders one scene per group)."""
    return [{"video": c.path if absolute else c.video, "group": c.group, "class": c.cls,
             "split": "train" if c.variant == 0 else "test", "scene": c.scene} for c in clips]


def moving_blobs(n_groups=3, variants=3, T=12, D=24, seed=0):
    """Tiny 'frame features': in group g a blob moves right (class a) or left (class b) along a 1-D
    retina, at a few speeds and start points; class b is exactly class a played backwards."""
    rng = np.random.default_rng(seed)
    cells = np.arange(D)
    seqs, group, cls = [], [], []
    for g in range(n_groups):
        centre = rng.uniform(8, D - 8)
        for _ in range(variants):
            speed, width = rng.uniform(0.5, 1.0), rng.uniform(1.5, 3)
            path = centre + speed * (np.arange(T) - T / 2) + rng.uniform(-1, 1)
            x = np.exp(-0.5 * ((cells[None] - path[:, None]) / width) ** 2) + 0.1 * (g + 1) * np.eye(D)[g]
            for c, seq in (("a", x), ("b", x[::-1])):
                seqs.append(seq)
                group.append(f"g{g}")
                cls.append(c)
    return np.array(seqs, np.float32), np.array(group), np.array(cls)


# ---- the labels CSV ----------------------------------------------------------------------------


def test_read_labels_resolves_paths_and_ignores_extra_columns(tmp_path):
    (tmp_path / "sub").mkdir()
    absolute = str(tmp_path / "elsewhere" / "b.mp4")
    rows = [{"video": "sub/a.mp4", "group": "g", "class": "x", "split": "train", "note": "hi"},
            {"video": absolute, "group": "g", "class": "y", "split": " TEST "}]
    labels = ev.read_labels(write_csv(tmp_path / "labels.csv", rows, ("note", "video", "group", "class", "split")))
    assert [lab.video for lab in labels] == [str(tmp_path / "sub" / "a.mp4"), absolute]
    assert [lab.split for lab in labels] == ["train", "test"]
    assert [lab.line for lab in labels] == [2, 3]


def test_read_labels_scene_column_is_optional_but_filled_when_present(tmp_path):
    rows = [{"video": "a.mp4", "group": "g", "class": "x", "split": "train", "scene": "kitchen"},
            {"video": "b.mp4", "group": "g", "class": "y", "split": "test", "scene": "garden"}]
    labels = ev.read_labels(write_csv(tmp_path / "s.csv", rows, ("video", "group", "class", "split", "scene")))
    assert [lab.scene for lab in labels] == ["kitchen", "garden"]
    assert all(lab.scene is None for lab in ev.read_labels(write_csv(tmp_path / "n.csv", rows)))
    rows[1]["scene"] = " "
    with pytest.raises(ev.LabelError) as e:
        ev.read_labels(write_csv(tmp_path / "e.csv", rows, ("video", "group", "class", "split", "scene")))
    assert "line 3: empty scene" in str(e.value)


def test_missing_columns_are_named(tmp_path):
    path = write_csv(tmp_path / "l.csv", [{"video": "a.mp4", "group": "g"}], ("video", "group"))
    with pytest.raises(ev.LabelError) as e:
        ev.read_labels(path)
    assert "missing column(s) class, split" in str(e.value)


def test_every_bad_row_is_reported_at_once(tmp_path):
    rows = [{"video": "a.mp4", "group": "g", "class": "x", "split": "train"},
            {"video": "b.mp4", "group": "g", "class": "y", "split": "validation"},
            {"video": "", "group": "g", "class": "y", "split": "test"},
            {"video": "a.mp4", "group": "g", "class": "y", "split": "test"}]
    with pytest.raises(ev.LabelError) as e:
        ev.read_labels(write_csv(tmp_path / "l.csv", rows))
    msg = str(e.value)
    assert e.value.problems and len(e.value.problems) == 3
    assert "line 3: unknown split 'validation'" in msg
    assert "line 4: empty video" in msg
    assert "line 5: a.mp4 is listed again (first on line 2)" in msg


def test_group_problems(tmp_path):
    def lab(group, cls, split):
        return ev.Label(f"/v/{group}-{cls}-{split}", group, cls, split, 0)

    labels = [lab("ok", "a", "train"), lab("ok", "b", "train"), lab("ok", "a", "test"),
              lab("lonely", "a", "train"), lab("lonely", "a", "test"),
              lab("notest", "a", "train"), lab("notest", "b", "train"),
              lab("notrain", "a", "test"), lab("notrain", "b", "test"),
              lab("halftrain", "a", "train"), lab("halftrain", "b", "test"),
              lab("three", "a", "train"), lab("three", "b", "train"), lab("three", "c", "test")]
    problems = "\n".join(ev.check_groups(labels))
    assert "group 'lonely' has only one class ('a')" in problems
    assert "group 'notest' has no test rows" in problems
    assert "group 'notrain' has no train rows" in problems
    assert "group 'halftrain': its train rows are all of class 'a'" in problems
    assert "group 'three' has 3 classes" in problems
    assert "'ok'" not in problems
    # retrieval needs no splits, only two classes per group
    assert len(ev.check_groups(labels, need_splits=False)) == 2


# ---- metrics on tiny synthetic descriptors ------------------------------------------------------


def test_probe_accuracy_is_the_mean_over_groups():
    rng = np.random.default_rng(0)
    group = np.repeat(["g1", "g2"], 8)
    cls = np.tile(np.repeat(["a", "b"], 4), 2)
    split = np.tile(["train", "train", "train", "test"], 4)
    desc = rng.normal(size=(16, 5))
    desc[:8, 0] += np.where(cls[:8] == "a", 5.0, -5.0)  # g1 separable along dim 0, g2 not at all
    desc[8:] = desc[8:][:, :1].repeat(5, 1) * 0 + 1.0   # g2: every descriptor identical
    res = ev.probe_accuracy(desc, group, cls, split)
    assert res["per_group"]["g1"] == 1.0
    assert res["per_group"]["g2"] == 0.5  # identical descriptors: one class predicted for both test rows
    assert res["accuracy"] == pytest.approx(0.75)


def test_retrieval_metrics_on_given_rankings():
    group = np.array(["g", "g", "g", "h"])
    cls = np.array(["a", "a", "b", "a"])
    fwd = [[1, 2], [2, 0], [0, 1], [0, 1]]  # clip 0 right; 1 wrong; 2 wrong (other class); 3 other group
    rev = [[2, 1], [2, 0], [0, 3], [2, 0]]  # clip 0 right; 1 right; 2 right; 3 other group
    res = ev.retrieval_metrics(fwd, rev, group, cls, k=2)
    assert res["forward_top1"] == 0.25 and res["reverse_top1"] == 0.75
    assert res["chiral_top1"] == 0.5 and res["both_top1"] == 0.25
    assert res["forward_p@2"] == pytest.approx((1 + 0.5 + 0.5 + 0) / 2 / 4)
    assert res["per_group"]["h"]["forward_top1"] == 0.0


def test_rank_exact_across_scenes_never_returns_the_query_scene():
    rng = np.random.default_rng(0)
    db = ev.l2n(rng.normal(size=(9, 4)))
    scene = np.array(["s0", "s0", "s0", "s1", "s1", "s2", "s2", "s2", "s2"])
    ranked = ev.rank_exact(db, db, k=10, scene=scene)
    assert ranked.shape == (9, 5)  # k cut to what the largest scene (4 rows) leaves: 9 - 4
    for i, row in enumerate(ranked):
        assert not (scene[row] == scene[i]).any()
        allowed = np.flatnonzero(scene != scene[i])
        assert row[0] == allowed[np.argmax(db[allowed] @ db[i])]  # the best of the other scenes
    # without scenes: only the query itself is left out
    plain = ev.rank_exact(db, db, k=3)
    assert plain.shape == (9, 3) and all(i not in row for i, row in enumerate(plain))


def cross_scene_descriptors(shared_motion: bool, seed: int = 0):
    """[m | dyn] descriptors of 2 groups x 3 scenes x 2 takes x 2 classes. m: the scene's look (same-scene
    takes nearly equal). dyn: class b is class a negated; with shared_motion, one direction per group in
    every scene (an action that reads the same anywhere), else one direction per scene."""
    rng = np.random.default_rng(seed)
    arrows = ev.l2n(rng.normal(size=(2, 16)))
    desc, group, cls, scene = [], [], [], []
    for g in range(2):
        for s in range(3):
            look = ev.l2n(rng.normal(size=16))
            arrow = arrows[g] if shared_motion else ev.l2n(rng.normal(size=16))
            for _take in range(2):
                m = ev.l2n(look + 0.05 * rng.normal(size=16))
                noise = 0.1 * rng.normal(size=16)
                for sign, c in ((1, "a"), (-1, "b")):
                    desc.append(np.concatenate([m, ev.l2n(sign * (arrow + noise))]))
                    group.append(f"g{g}")
                    cls.append(c)
                    scene.append(f"g{g}-s{s}")
    return np.array(desc), np.array(group), np.array(cls), np.array(scene)


def test_cross_scene_retrieval_tells_shared_motion_from_scene_specific_motion():
    for shared in (True, False):
        desc, group, cls, scene = cross_scene_descriptors(shared)
        same = ev.lift_retrieval(desc, group, cls, k=1, motion=0.5)
        # within a scene both kinds are perfect: the other take is the nearest clip
        assert same["forward_top1"] == 1.0 and same["reverse_top1"] == 1.0
        cross = ev.lift_retrieval(desc, group, cls, k=1, motion=1.0, scene=scene)
        if shared:  # the same action in the other scenes is found, and its reverse is the opposite action
            assert cross["forward_top1"] == 1.0 and cross["reverse_top1"] == 1.0
            assert cross["per_group"]["g1"]["both_top1"] == 1.0
        else:  # directions of unrelated scenes: no better than a coin over the 4 (group, class) pairs
            assert cross["forward_top1"] <= 0.5 and cross["reverse_top1"] <= 0.5
    # appearance alone (motion weight 0) is time-blind across scenes as well
    blind = ev.lift_retrieval(desc, group, cls, k=1, motion=0.0, scene=scene)
    assert blind["both_top1"] == 0.0


def test_mean_pooling_is_time_blind_so_its_reverse_retrieval_is_at_chance():
    seqs, group, cls = moving_blobs()
    flipped = seqs[:, ::-1]
    mean = dict((m.key, m) for m in ev.BASELINES)["mean"].fn
    np.testing.assert_allclose(mean(seqs), mean(flipped), atol=1e-6)  # exactly reversal-invariant
    res = ev.exact_retrieval(mean(seqs), mean(flipped), group, cls, k=3)
    # the reverse query ranks like the forward one, so for no clip can both be right
    assert res["both_top1"] == 0.0
    assert res["chiral_top1"] <= 0.5
    # here each clip's nearest neighbour is its own reversal: forward always wrong, reverse always right
    assert res["forward_top1"] == 0.0 and res["reverse_top1"] == 1.0 and res["chiral_top1"] == 0.5
    # a time-aware baseline can beat that bound
    concat = dict((m.key, m) for m in ev.BASELINES)["concat"].fn
    res = ev.exact_retrieval(concat(seqs), concat(flipped), group, cls, k=1)
    assert res["chiral_top1"] > 0.7 and res["both_top1"] > 0.5


def test_baseline_dims():
    x = np.zeros((2, 16, 10), np.float32)
    dims = {m.key: m.fn(x).shape[1] for m in ev.BASELINES}
    assert dims == {"middle": 10, "mean": 10, "first_last": 20, "concat": 160, "chord": 10}
    # the chord is antisymmetric in time: the reversed clip's chord is its negation
    x = np.random.default_rng(0).normal(size=(3, 16, 10)).astype(np.float32)
    chord = dict((m.key, m) for m in ev.BASELINES)["chord"].fn
    np.testing.assert_allclose(chord(x[:, ::-1]), -chord(x), atol=1e-12)


def test_lift_scoring_matches_the_engine_formula_and_motion_zero_is_time_blind():
    rng = np.random.default_rng(1)
    scenes = ev.l2n(rng.normal(size=(4, 8)))      # appearance per (group, scene)
    arrows = ev.l2n(rng.normal(size=(2, 8)))      # direction of change per group
    desc, group, cls = [], [], []
    for s in range(4):
        for variant in range(2):
            for sign, c in ((1, "a"), (-1, "b")):
                m = ev.l2n(scenes[s] + 0.05 * rng.normal(size=8))
                dyn = ev.l2n(sign * arrows[s // 2] + 0.2 * rng.normal(size=8))
                desc.append(np.concatenate([m, dyn]))
                group.append(f"g{s // 2}")
                cls.append(c)
    desc, group, cls = np.array(desc), np.array(group), np.array(cls)
    res = ev.lift_retrieval(desc, group, cls, k=1, motion=0.5)
    assert res["forward_top1"] == 1.0 and res["reverse_top1"] == 1.0
    blind = ev.lift_retrieval(desc, group, cls, k=1, motion=0.0)
    assert blind["both_top1"] == 0.0 and blind["chiral_top1"] <= 0.5


# ---- on a real index (the session's small_index fixture) -----------------------------------------


@pytest.fixture(scope="module")
def labels_csv(small_library) -> Path:
    library, clips = small_library
    return write_csv(library / "eval_labels.csv", library_rows(clips))


def test_eval_chiral_cli(small_index, labels_csv, tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert main(["eval", "chiral", "--index", str(small_index), "--labels", str(labels_csv),
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert (res["videos"], res["groups"], res["train"], res["test"]) == (16, 4, 8, 8)
    rows = {m["key"]: m for m in res["methods"]}
    # the default pooling ("global+cells"): the baselines read the pooled part, the flow reads the cells
    assert set(rows) == {"middle", "mean", "first_last", "concat", "chord", "flow", "lift_raw", "lift_sym"}
    D = res["pooled_dim"]
    assert (D, res["feature_dim"]) == (1280, 1280 + LITE0_CELLS.dim)
    assert rows["concat"]["dims"] == res["frames_per_clip"] * D and rows["first_last"]["dims"] == 2 * D
    assert rows["flow"]["dims"] == 2 * LITE0_CELLS.grid ** 2
    assert rows["lift_sym"]["dims"] == rows["lift_raw"]["dims"] == 128  # the fixture's d = 64
    assert rows["concat"]["dims"] >= 10 * rows["lift_sym"]["dims"]
    for m in rows.values():
        assert 0.0 <= m["accuracy"] <= 1.0 and len(m["per_group"]) == 4
        assert m["name"] in printed
    assert "accuracy" in printed and "per group" in printed


def test_eval_retrieval_cli_and_engine_agrees_with_numpy(small_index, small_library, tmp_path, capsys):
    library, clips = small_library
    # a CSV in another folder, with absolute paths
    csv_path = write_csv(tmp_path / "elsewhere" / "labels.csv", library_rows(clips, absolute=True))
    out = tmp_path / "retrieval.json"
    assert main(["eval", "retrieval", "--index", str(small_index), "--labels", str(csv_path), "-k", "3",
                 "--motion-weights", "0,0.5,1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["clips"] == 16 and res["k"] == 3
    assert [s["motion"] for s in res["engine_sweep"]] == [0.0, 0.5, 1.0]
    rows = {m["key"]: m for m in res["methods"]}
    # time-blind: mean pooling and LiFT at motion weight 0 rank the same for both queries
    assert rows["mean"]["both_top1"] == 0.0 and rows["mean"]["chiral_top1"] <= 0.5
    assert res["engine_sweep"][0]["both_top1"] == 0.0
    assert "forward_p@3" in rows["lift_sym"] and "motion-weight sweep" in printed

    # the engine's rankings equal the engine formula applied in numpy to descriptors of the cached features
    bench = ev.load_benchmark(small_index, csv_path, need_splits=False)
    desc = ev.lift_sym(bench.engine.model, bench.seqs)
    np.testing.assert_allclose(desc, bench.engine.store.vectors(bench.clip_ids), atol=1e-4)
    fwd, rev = ev.engine_rankings(bench, 3, 0.5)
    for reverse, ranked in ((False, fwd), (True, rev)):
        mine = ev.lift_rank(desc, 0.5, reverse, 3)
        agree = np.mean([a[0] == b[0] for a, b in zip(ranked, mine)])
        assert agree >= 0.9  # float32 ties aside, the same top-1


def test_eval_retrieval_across_scenes(small_index, small_library, tmp_path, capsys):
    """With a scene column the report adds cross-scene results. The small library has one scene per group,
    so across its scenes (a) nothing is ever right; with each take counted as its own scene (b), the other
    take of the same scene is what is left, and the engine's cross-scene rankings must equal numpy's."""
    library, clips = small_library
    columns = ("video", "group", "class", "split", "scene")
    rows = library_rows(clips)
    out = tmp_path / "a.json"
    assert main(["eval", "retrieval", "--index", str(small_index), "--labels",
                 str(write_csv(library / "scene_labels.csv", rows, columns)), "-k", "2",
                 "--motion-weights", "0.5,1", "--json", str(out)]) == 0
    assert "ACROSS SCENES (4 scenes)" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["scenes"] == 4 and res["cross_scene_chance"] == pytest.approx(1 / 8)
    for r in res["methods"] + res["engine_sweep"]:
        x = r["cross_scene"]
        assert x["forward_top1"] == x["reverse_top1"] == x["forward_p@2"] == 0.0  # other scenes: other groups
        assert set(x["per_group"]) == {c.group for c in clips}

    for r in rows:  # (b): scene = scene and take
        r["scene"] = f"{r['scene']}-v{'0' if r['split'] == 'train' else '1'}"
    csv_path = write_csv(library / "take_labels.csv", rows, columns)
    bench = ev.load_benchmark(small_index, csv_path, need_splits=False)
    desc = ev.lift_sym(bench.engine.model, bench.seqs)
    for w in (0.5, 1.0):
        fwd, rev = ev.engine_rankings(bench, 3, w, bench.scene)
        for reverse, ranked in ((False, fwd), (True, rev)):
            mine = ev.lift_rank(desc, w, reverse, 3, bench.scene)
            assert all(len(a) == 3 and not (bench.scene[a] == bench.scene[i]).any() for i, a in enumerate(ranked))
            assert np.mean([a[0] == b[0] for a, b in zip(ranked, mine)]) >= 0.9
    res = ev.run_retrieval(bench, k=3, weights=(1.0,))
    x = res["engine_sweep"][0]["cross_scene"]
    assert x == ev.retrieval_metrics(*ev.engine_rankings(bench, 3, 1.0, bench.scene), bench.group, bench.cls, 3)


def test_eval_reports_every_bad_row_against_the_index(small_index, small_library, tmp_path, capsys):
    library, clips = small_library
    stray = tmp_path / "stray.mp4"  # exists, but was never indexed
    stray.write_bytes(b"\0" * 10)
    rows = library_rows(clips, absolute=True)
    rows = [r for r in rows if r["group"] != "open_close" or r["class"] == "open"]  # one-class group
    rows += [{"video": str(stray), "group": "left_right", "class": "left", "split": "train"},
             {"video": str(tmp_path / "gone.mp4"), "group": "left_right", "class": "left", "split": "test"}]
    csv_path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ev.LabelError) as e:
        ev.load_benchmark(small_index, csv_path)
    msg = str(e.value)
    assert "group 'open_close' has only one class ('open')" in msg
    assert f"{stray} is not in the index" in msg
    assert f"video file not found: {tmp_path / 'gone.mp4'}" in msg
    assert len(e.value.problems) == 3
    # the command line prints the same list, one clear message, no traceback
    assert main(["eval", "chiral", "--index", str(small_index), "--labels", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err and "not in the index" in err and "Traceback" not in err
