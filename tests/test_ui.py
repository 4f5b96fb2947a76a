"""The Streamlit app (ui/app.py), driven with streamlit.testing.v1.AppTest against real small indexes:
each page, the opposite-action toggle, uploads, the failures panel, and that nothing the browser sends
(query parameters, upload names) and no symlink inside the library reaches a file outside it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lift.config import MOTION_WEIGHT
from search import SearchEngine, SearchError
from tests.helpers import APP, APP_TIMEOUT, app, index_with_outside_link, no_crash, plain, results, shown
from ui import helpers as h



def clip_named(index: Path, fragment: str) -> int:
    return next(c.clip_id for c in SearchEngine.open(index).clips() if fragment in c.video_path)


@pytest.fixture(scope="module")
def odd_index(small_library, small_index, tmp_path_factory) -> tuple[Path, Path]:
    """(index, library) of two good videos, a corrupt .mp4 and a symlink to a video outside the library;
    reuses small_index's LiFT weights, so nothing is trained."""
    library, _ = small_library
    index = index_with_outside_link(tmp_path_factory.mktemp("odd"), library, small_index,
                                    ["good_a.mp4", "good_b.mp4"], ".mp4", corrupt=("broken.mp4",))
    return index, index.parent / "videos"


# ---- pages ----------------------------------------------------------------------------------------
def test_library_grid_filters_and_paging(small_index, monkeypatch):
    at = app(small_index, monkeypatch)
    no_crash(at)
    assert at.header[0].value == "Library"
    assert "16 of 16 clips" in shown(at)
    assert len(at.image) == 16                       # 24 per page: all thumbnails
    assert "Every file in the indexed folders was indexed." in shown(at)

    at.selectbox(key="lib_size").set_value(12).run()
    assert len(at.image) == 12
    at.pagination(key="lib_page").set_value(2).run()
    assert len(at.image) == 4

    at.text_input(key="lib_text").set_value("LEFT").run()  # case-insensitive; back to page 1
    text = shown(at)
    assert "4 of 16 clips" in text and len(at.image) == 4
    assert all("left" in c for c in re.findall(r"\S+\.(?:mp4|webm)", text))

    at.text_input(key="lib_text").set_value("").run()
    folder = next(o for o in at.selectbox(key="lib_folder").options if o.endswith("up_down"))
    at.selectbox(key="lib_folder").set_value(folder).run()
    assert "4 of 16 clips" in shown(at)
    assert all("up_down" in c for c in re.findall(r"\S+\.(?:mp4|webm)", shown(at)))


def test_search_from_library_and_opposite_action(small_index, monkeypatch):
    at = app(small_index, monkeypatch)
    query = clip_named(small_index, "left_right-000_v0_left")
    twin = clip_named(small_index, "left_right-000_v0_right")   # the same clip reversed in time
    at.button(key=f"lib_search_{query}").click().run()
    no_crash(at)
    assert at.header[0].value == "Search"
    assert f"clip {query}" in at.markdown[0].value            # the query, beside the results
    k = at.number_input(key="k").value
    same = results(at)
    assert [r for r, _, _ in same] == list(range(1, k + 1))
    assert query not in [c for _, c, _ in same]
    assert all(a[2] >= b[2] for a, b in zip(same, same[1:]))   # best first
    text = shown(at)
    assert len(re.findall(r"appearance [+-][\d.]+ · motion [+-][\d.]+", text)) == k
    assert f"score = {1 - MOTION_WEIGHT:.2f} × appearance + {MOTION_WEIGHT:.2f} × motion" in text
    # every result plays from its start second, or says why it shows a still instead (mp4v test videos)
    assert len(at.get("video")) + text.count("does not play in browsers") == k + 1

    at.toggle(key="opposite").set_value(True).run()
    no_crash(at)
    opposite = results(at)
    assert "clips doing the opposite of the query" in shown(at)
    assert [c for _, c, _ in opposite] != [c for _, c, _ in same]
    assert opposite[0][1] == twin                               # top-1: the same scene, reversed
    assert same[0][1] != twin

    at.number_input(key="k").set_value(3).run()
    assert len(results(at)) == 3
    at.slider(key="motion").set_value(0.0).run()
    assert "score = 1.00 × appearance + 0.00 × motion" in shown(at)


def test_upload_query_never_uses_the_name(small_library, small_index, monkeypatch, tmp_path):
    library, _ = small_library
    video = sorted(library.rglob("*left.webm"))[0]
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "a" / "b")  # where "../../x.mp4" would land if the name were a path
    at = app(small_index, monkeypatch, page="Search")
    at.segmented_control(key="source").set_value("Upload a video").run()
    at.file_uploader(key="upload_file").set_value(("../../x.mp4", video.read_bytes(), "video/mp4")).run()
    no_crash(at)
    assert not at.error, [e.value for e in at.error]
    assert len(results(at)) == at.number_input(key="k").value
    assert "uploaded “../../x.mp4”" in shown(at)
    assert not (tmp_path / "x.mp4").exists() and not list(tmp_path.rglob("x.mp4"))
    before = results(at)
    at.toggle(key="opposite").set_value(True).run()           # re-searched from cached features
    assert results(at) != before


@pytest.mark.parametrize("name, data", [("notes.txt", b"hello"), ("x.mp4.sh", b"#!/bin/sh"),
                                        ("../../x.MP4", b"\x00\x01not a video" * 300)], ids=["txt", "sh", "junk"])
def test_upload_refused(small_index, monkeypatch, name, data):
    """A wrong type is refused by Streamlit itself (the browser's picker never offers one; a forged
    request gets "Invalid file extension"); a file that does not decode gets a clear message."""
    at = app(small_index, monkeypatch, page="Search")
    at.segmented_control(key="source").set_value("Upload a video").run()
    at.file_uploader(key="upload_file").set_value((name, data, "application/octet-stream")).run()
    refusals = [plain(e.value) for e in at.error] + [e.message for e in at.exception]
    if name.lower().endswith(".mp4"):
        assert not at.exception and any(r.startswith("cannot use") for r in refusals), refusals
    else:
        assert any("Invalid file extension" in r for r in refusals), refusals
    assert "lift-search-query-" not in shown(at) and not results(at)


def test_upload_size_limit(small_index, monkeypatch):
    from streamlit import config

    old = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)
    try:
        at = app(small_index, monkeypatch, page="Search")
        at.segmented_control(key="source").set_value("Upload a video").run()
        at.file_uploader(key="upload_file").set_value(("big.mp4", b"\0" * (2 * 2**20), "video/mp4")).run()
    finally:
        config.set_option("server.maxUploadSize", old)
    assert any("the limit is 1 MB" in plain(e.value) for e in at.error)


def test_explain_clip_renders_a_figure(small_index, monkeypatch):
    clip = clip_named(small_index, "up_down-000_v1_up")
    at = app(small_index, monkeypatch, page="Explain", clip=str(clip))
    no_crash(at)
    assert at.header[0].value == "Explain"
    assert len(at.image) == 1 and at.image[0].value      # the matplotlib figure
    assert re.search(rf"clip {clip}\*\*: 16 frames over \d", shown(at))


def test_explain_opposite_result_arrows_point_opposite_ways(small_index, monkeypatch):
    query = clip_named(small_index, "up_down-000_v1_up")
    twin = clip_named(small_index, "up_down-000_v1_down")
    at = app(small_index, monkeypatch, page="Search", clip=str(query))
    at.toggle(key="opposite").set_value(True).run()
    assert twin in [c for _, c, _ in results(at)]
    at.button(key=f"why_{twin}").click().run()
    no_crash(at)
    assert at.header[0].value == "Explain"
    assert at.segmented_control(key="explain_what").value == "A search result"
    assert at.selectbox(key="explain_result").value == twin
    assert len(at.image) == 1
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Arrows' cosine"]) < -0.5
    assert float(metrics["Motion part"]) > 0.5               # matches the query's motion reversed
    assert "moves the opposite way" in shown(at)


def test_index_page(small_index, monkeypatch):
    at = app(small_index, monkeypatch, page="Index")
    no_crash(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Videos"] == "16" and metrics["Clips"] == "16" and metrics["Failed files"] == "0"
    assert metrics["Disk use"].endswith("MB")
    table = at.table[0].value
    info = dict(zip(table["Setting"], table["Value"]))
    assert info["Backbone"] == "efficientnet-lite0"
    assert "16 frames per clip" in info["Sampling"]
    assert info["Last updated"] not in ("", "None")


def test_failures_panel_and_symlink_outside(odd_index, monkeypatch):
    index, lib = odd_index
    at = app(index, monkeypatch)
    no_crash(at)
    assert "1 file(s) could not be indexed" in at.expander[0].label
    table = at.dataframe[0].value
    assert list(table["file"]) == ["videos/broken.mp4"] and table["reason"][0]

    engine = SearchEngine.open(index)
    link = next(c.clip_id for c in engine.clips() if c.video_path.endswith("link.mp4"))
    with pytest.raises(SearchError, match="outside the indexed folders"):
        engine.video_file(link)
    good = next(c.clip_id for c in engine.clips() if c.video_path.endswith("good_a.mp4"))
    assert engine.video_file(good) == (lib / "good_a.mp4").resolve()

    at = app(index, monkeypatch, page="Search", clip=str(link))
    no_crash(at)
    assert "outside the indexed folders" in "\n".join(w.value for w in at.warning)
    served = [v for v in at.get("video")]
    assert not any("secret" in str(v.proto) for v in served)


# ---- what the browser sends ---------------------------------------------------------------------
@pytest.mark.parametrize("value", ["../../etc/passwd", "%2e%2e", "..", "/etc/passwd", "3/../4", "1e3", "-3",
                                   "0x10", "٣", " 3 4", "", "3.0"])
def test_clip_parameter_refused(small_index, monkeypatch, value):
    at = app(small_index, monkeypatch, page="Search", clip=value)
    no_crash(at)
    assert any("is not a clip id" in plain(e.value) for e in at.error), [e.value for e in at.error]
    assert not results(at) and not at.get("video")


def test_clip_parameter_unknown_and_valid(small_index, monkeypatch):
    at = app(small_index, monkeypatch, page="Search", clip="99999")
    assert any("there is no clip 99999" in e.value for e in at.error)
    at = app(small_index, monkeypatch, page="Search", clip="5")
    no_crash(at)
    assert not at.error and at.markdown[0].value.startswith("**clip 5**") and results(at)
    at = app(small_index, monkeypatch, clip="7")              # no page: the search for that clip
    assert at.header[0].value == "Search" and at.markdown[0].value.startswith("**clip 7**")


def test_missing_index_is_a_message(monkeypatch, tmp_path):
    monkeypatch.delenv("LIFT_SEARCH_INDEX", raising=False)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT).run()
    assert "No index given" in at.error[0].value
    at = app(tmp_path / "nothing", monkeypatch)
    assert "no lift-search index" in at.error[0].value


# ---- helpers -------------------------------------------------------------------------------------
def test_parse_clip_id():
    assert h.parse_clip_id("12") == 12 and h.parse_clip_id(["1", "7"]) == 7 and h.parse_clip_id(" 12\n") == 12
    for bad in ["../1", "1/", "١٢", "+1", "0", "1" * 14, None, [], "1 2", "12\x00"]:
        with pytest.raises(h.InputError):
            h.parse_clip_id(bad)


def test_markdown_is_inert_and_listing_helpers():
    assert h.md("a_b*[x](javascript:1):red[y]") == r"a\_b\*\[x\]\(javascript\:1\)\:red\[y\]"
    assert h.quote("x" * 100).endswith("…”")
    assert h.display_name("/lib/videos/a/b.mp4", ["/lib/videos"]) == "videos/a/b.mp4"
    assert h.display_name("/elsewhere/b.mp4", ["/lib/videos"]) == "b.mp4"
    assert h.folder_of("/lib/videos/a/b.mp4", ["/lib/videos"]) == "videos/a"
