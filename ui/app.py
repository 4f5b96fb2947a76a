"""lift-search in the browser: browse the library, search by a clip or an upload, find the opposite
action, see why a clip matched.  Start it with `lift-search ui --index IDX` (or, for tests, with the
index in the LIFT_SEARCH_INDEX environment variable).

Everything goes through search.SearchEngine: videos are served by clip id only (SearchEngine.video_file
checks each file lies inside the indexed folders) and nothing the browser sends is used as a path.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

if __package__ in (None, ""):  # run as a script by `streamlit run ui/app.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lift.errors import LiftSearchError  # noqa: E402
from lift.config import MOTION_WEIGHT  # noqa: E402
from search import SearchEngine, SearchError, uploads  # noqa: E402
from search.engine import search_summary  # noqa: E402
from search.explain import Trajectory, clip_trajectory, compare, project  # noqa: E402
from ui import helpers as h  # noqa: E402
from ui.plots import trajectory_figure  # noqa: E402

PAGES = ("Library", "Search", "Explain", "Index")
PAGE_SIZES = (12, 24, 48, 96)
GRID = 4                      # library cards per row
MAX_PLAY_BYTES = 512 * 2**20  # larger files are shown as a thumbnail: Streamlit holds media in memory
PICKER_LIMIT = 5000           # above this many clips, a clip is picked by number instead of from a list


# ---- engine and cached reads --------------------------------------------------------------------
def index_path() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--index")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.index or os.environ.get("LIFT_SEARCH_INDEX") or None


@st.cache_resource(show_spinner="Opening the index…")
def get_engine(index: str) -> SearchEngine:
    return SearchEngine.open(index)


@st.cache_data(show_spinner=False)
def library_facts(index: str) -> tuple[tuple[float, float], int]:
    """(the shortest and longest clip, the number of clips): read once (the engine's view is fixed)."""
    engine = get_engine(index)
    return engine.length_range(), engine.count()


@st.cache_data(show_spinner=False, max_entries=256)
def matching(index: str, folder: str | None, text: str, length) -> int:
    return get_engine(index).count(folder=folder, text=text or None, length=length)


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail(index: str, clip_id: int):
    return get_engine(index).thumbnail(clip_id)


@st.cache_data(show_spinner=False, max_entries=4096)
def playable(index: str, clip_id: int) -> tuple[bool, str]:
    path = get_engine(index).video_file(clip_id)
    if path.stat().st_size > MAX_PLAY_BYTES:
        return False, "too large to stream here"
    ok, codec = h.browser_codec(path)
    return ok, f"its {codec} codec does not play in browsers" if not ok else codec


@st.cache_data(show_spinner=False, max_entries=256)
def trajectory(index: str, clip_id: int, label: str) -> Trajectory:
    return clip_trajectory(get_engine(index), clip_id, label)


def roots(engine: SearchEngine) -> list[str]:
    return list(engine.settings.get("roots") or [])


@st.cache_resource(show_spinner=False)
def search_folders(index: str) -> dict[str, str]:
    """The folders holding indexed videos: {name shown (under its indexed folder): absolute path}."""
    engine = get_engine(index)
    rts = roots(engine)
    return {h.folder_of(str(Path(f) / "x"), rts): f for f in engine.folders()}


def clip_label(engine: SearchEngine, clip) -> str:
    name = h.display_name(clip.video_path, roots(engine))
    return f"clip {clip.clip_id} · {name} · {h.seconds(clip.start_s, clip.end_s)}"


# ---- navigation state -----------------------------------------------------------------------------
def go(page: str, clip: int | None = None, result: int | None = None, what: str | None = None):
    """Button callback: switch page, optionally choosing the query clip or the result to explain."""
    st.session_state.page = page
    if clip is not None:
        st.session_state.query_clip = clip
        st.session_state.source = "Library clip"
    if result is not None:
        st.session_state.explain_result = result
    if what is not None:
        st.session_state.explain_what = what


def go_first_page():
    st.session_state.lib_page = 1


def read_query_params(engine: SearchEngine) -> None:
    """`?clip=ID` chooses the query clip: a whole number of a clip in this index; anything else is
    refused with a message and dropped from the address."""
    raw = st.query_params.get_all("clip")
    if not raw:
        return
    try:
        clip_id = h.parse_clip_id(raw)
        engine.clip(clip_id)
    except (h.InputError, SearchError) as e:
        why = e if isinstance(e, h.InputError) else f"there is no clip {clip_id} in this index."
        st.error(f"Ignored the address's clip parameter: {why}")
        del st.query_params["clip"]
        return
    if st.session_state.get("_clip_param") != clip_id:  # a new address: follow it once
        st.session_state._clip_param = clip_id
        st.session_state.query_clip = clip_id
        st.session_state.source = "Library clip"
        if "page" not in st.query_params:  # ?clip=12 alone opens the search for that clip
            st.session_state.page = "Search"


def clip_picker(engine: SearchEngine, index: str, label: str, key: str) -> int | None:
    """Choose st.session_state.query_clip from the library (a list, or a number for huge libraries)."""
    total = library_facts(index)[1]
    current = st.session_state.get("query_clip")

    def picked():
        st.session_state.query_clip = st.session_state[key]

    if total <= PICKER_LIMIT:
        clips = engine.clip_page(0, PICKER_LIMIT, order="path")
        labels = {c.clip_id: clip_label(engine, c) for c in clips}
        current = current if current in labels else None
        st.session_state[key] = current
        st.selectbox(label, list(labels), index=None, key=key, format_func=lambda i: labels[i], on_change=picked,
                     placeholder="Choose a clip (or pick one on the Library page)")
    else:
        st.session_state[key] = current
        st.number_input(label, min_value=1, step=1, key=key, on_change=picked, value=None,
                        placeholder="clip number")
    chosen = st.session_state.get("query_clip")
    if chosen is None:
        return None
    try:
        engine.clip(chosen)
    except SearchError:
        st.warning(f"There is no clip {int(chosen)} in this index.")
        return None
    return chosen


# ---- pages ----------------------------------------------------------------------------------------
def library_ui(engine: SearchEngine, index: str) -> None:
    st.header("Library")
    rts = roots(engine)
    (lo, hi), total = library_facts(index)
    shown_folder = search_folders(index)
    c1, c2, c3, c4 = st.columns([2, 2, 3, 1])
    first = dict(on_change=go_first_page, persist_state="session")
    folder = c1.selectbox("Folder", ["All folders", *sorted(shown_folder)], key="lib_folder", **first)
    text = c2.text_input("Path contains", key="lib_text", placeholder="e.g. left", **first)
    duration = None
    if hi - lo > 0.05:
        duration = c3.slider("Clip length (s)", lo, hi, (lo, hi), step=0.1, format="%.1f", key="lib_dur", **first)
    else:
        c3.caption(f"Every clip is {lo:.1f} s long.")
    size = c4.selectbox("Per page", PAGE_SIZES, index=1, key="lib_size", **first)
    where = dict(folder=shown_folder.get(folder), text=text.strip() or None,
                 length=tuple(duration) if duration else None)
    n = matching(index, **where)
    st.caption(f"{n} of {total} clips")
    pages = max(1, -(-n // size))
    page_no = min(max(1, st.session_state.get("lib_page", 1)), pages)
    shown = engine.clip_page((page_no - 1) * size, size, order="path", **where)  # this page's clips only
    for row in range(0, len(shown), GRID):
        for col, c in zip(st.columns(GRID), shown[row: row + GRID]):
            with col.container(border=True):
                st.image(thumbnail(index, c.clip_id), width="stretch")
                st.markdown(f"**clip {c.clip_id}** · {h.seconds(c.start_s, c.end_s)}")
                name = h.display_name(c.video_path, rts)
                st.caption(h.md(Path(name).name))
                b1, b2 = st.columns(2, gap="small")
                b1.button("Search", key=f"lib_search_{c.clip_id}", on_click=go, args=("Search", c.clip_id),
                          help="Find clips like this one", width="stretch")
                b2.button("Explain", key=f"lib_explain_{c.clip_id}", on_click=go,
                          args=("Explain", c.clip_id, None, "A clip"), width="stretch",
                          help="See this clip's feature trajectory")
    if pages > 1:
        st.pagination(pages, key="lib_page", max_visible_pages=9, persist_state="session")
    failures_panel(engine)


def failures_panel(engine: SearchEngine) -> None:
    failed = engine.failures()
    if not failed:
        st.caption("Every file in the indexed folders was indexed.")
        return
    with st.expander(f"{len(failed)} file(s) could not be indexed", expanded=True, icon=":material/warning:"):
        rts = roots(engine)
        st.dataframe({"file": [h.display_name(p, rts) for p, _ in failed], "reason": [r for _, r in failed]},
                     hide_index=True, width="stretch")


def search_ui(engine: SearchEngine, index: str) -> None:
    st.header("Search")
    st.session_state.setdefault("source", "Library clip")
    source = st.segmented_control("Query", ["Library clip", "Upload a video"], key="source", required=True,
                                  persist_state="session")
    c1, c2, c3 = st.columns([1, 3, 2])
    k = c1.number_input("Results (k)", 1, 60, 9, key="k", persist_state="session")
    motion = c2.slider("Appearance ↔ motion", 0.0, 1.0, MOTION_WEIGHT, 0.05, key="motion", persist_state="session",
                       help="0: results look like the query; 1: results move like it")
    opposite = c3.toggle("Opposite action", key="opposite", persist_state="session",
                         help="Find clips where the same thing happens in reverse (left ↔ right, open ↔ close)")
    f1, f2 = st.columns([4, 2])
    folders = search_folders(index)
    chosen = f1.multiselect("Only in folders", list(folders), key="within", persist_state="session",
                            placeholder="All indexed folders")
    keep = f2.toggle("Every window", key="keep_windows", persist_state="session",
                     help="Show overlapping windows of one video as separate results (off: each moment once, "
                          "by its best window)")
    opts = dict(k=int(k), reverse=opposite, motion=motion, within=[folders[f] for f in chosen] or None,
                overlap="keep" if keep else "distinct")
    query = None
    if source == "Upload a video":
        query = upload_query(engine)
    else:
        clip_id = clip_picker(engine, index, "Query clip", key="search_pick")
        if clip_id is not None:
            query = ("clip", clip_id)
    if query is None:
        st.info("Choose a query clip, or upload a video, to search the library.")
        return
    try:
        hits = (engine.search_clip(query[1], **opts) if query[0] == "clip"
                else engine.search_features(st.session_state.upload["features"], **opts))
    except SearchError as e:
        st.error(str(e))
        return
    st.session_state.last_search = {"query": query, "hits": hits, "opposite": opposite, "motion": motion}
    qcol, rcol = st.columns([1, 3], gap="medium")
    with qcol:
        st.subheader("Query")
        show_query(engine, index, query)
    with rcol:
        title = "doing the opposite of the query" if opposite else "like the query"
        st.subheader(f"{len(hits)} clips {title}")
        st.caption(f"score = {1 - motion:.2f} × appearance + {motion:.2f} × motion: the cosines of LiFT's "
                   "static and dynamic descriptors" + (", the query's motion reversed" if opposite else ""))
        if not hits:
            st.info("No results.")
        for row in range(0, len(hits), 3):
            for col, hit in zip(st.columns(3), hits[row: row + 3]):
                with col.container(border=True):
                    result_card(engine, index, hit)


def upload_query(engine: SearchEngine):
    max_mb = int(st.get_option("server.maxUploadSize"))
    types = ", ".join(f".{t}" for t in uploads.VIDEO_TYPES)
    up = st.file_uploader(f"Video file ({types}; up to {max_mb} MB)", type=list(uploads.VIDEO_TYPES),
                          key="upload_file", max_upload_size=max_mb)
    if up is None:
        st.session_state.pop("upload", None)
        return None
    held = st.session_state.get("upload")
    limit = max_mb * 2**20
    try:
        if held is None or held["file_id"] != up.file_id:
            with st.spinner("Reading the video…"):
                info = upload_call(engine.video_info, up, limit)
            held = {"file_id": up.file_id, "name": up.name, "type": uploads.check_upload(up.name, up.size, limit),
                    "duration": info.duration_s, "segment": None, "features": None}
            st.session_state.upload = held
        segment = segment_slider(engine, held)
        if held["features"] is None or held["segment"] != segment:
            with st.spinner("Embedding the query…"):
                start, end = segment or (None, None)
                held["features"], held["reconstruction"] = upload_call(engine.video_features, up, limit, start, end)
            held["segment"] = segment
    except (uploads.InputError, SearchError) as e:
        st.session_state.pop("upload", None)
        st.error(h.md(e))  # the message quotes the upload's name: shown literally
        return None
    return ("upload", held["file_id"], held["segment"])


def upload_call(fn, up, max_bytes: int, *args):
    """fn(private copy of the upload, *args), the upload checked first (search.uploads.query_file: an
    error names the upload, never the temp file)."""
    with uploads.query_file(up.getvalue(), up.name, up.size, max_bytes) as tmp:
        return fn(tmp, *args)


def segment_slider(engine: SearchEngine, held: dict) -> tuple[float, float] | None:
    """The part of the uploaded video to search with: all of it if it is one clip long (unless a segment is
    asked for), else a range of the slider (first window by default)."""
    duration, sampling = held["duration"], engine.sampling
    long = duration > sampling.max_single_s
    if not long and not st.toggle("Search with a segment", key="use_segment",
                                  help="Search with a part of the video instead of all of it"):
        return None
    if long:
        st.caption(f"The video is {duration:.1f} s long: choose the moment to search with (the index cuts long "
                   f"videos into {sampling.window_s:g} s windows).")
    start, end = st.slider("Segment (s)", 0.0, round(duration, 1), (0.0, round(min(duration, sampling.window_s), 1)),
                           step=0.1, format="%.1f", key=f"segment_{held['file_id']}")
    return (start, end) if end > start else (start, min(start + 0.1, duration))


def show_query(engine: SearchEngine, index: str, query) -> None:
    if query[0] == "clip":
        clip = engine.clip(query[1])
        player(engine, index, clip.clip_id, clip.start_s)
        st.markdown(f"**clip {clip.clip_id}** · {h.seconds(clip.start_s, clip.end_s)}")
        st.caption(h.md(h.display_name(clip.video_path, roots(engine))))
        st.button("Explain this clip", on_click=go, args=("Explain", clip.clip_id, None, "A clip"))
    else:
        up = st.session_state.get("upload_file")
        held = st.session_state.upload
        if up is not None:
            st.video(up.getvalue(), format=uploads.MEDIA_TYPES[held["type"].lstrip(".")])
        span = f" · {h.seconds(*held['segment'])}" if held.get("segment") else ""
        st.caption(f"uploaded {h.quote(held['name'])}{span} · {len(held['features'])} frames")


def player(engine: SearchEngine, index: str, clip_id: int, start_s: float) -> None:
    """The clip's video from its start second, by clip id only; a thumbnail where it cannot play."""
    try:
        ok, why = playable(index, clip_id)
        path = engine.video_file(clip_id) if ok else None
    except SearchError as e:
        st.image(thumbnail(index, clip_id), width="stretch")
        st.warning(str(e))
        return
    if path is None:
        st.image(thumbnail(index, clip_id), width="stretch")
        st.caption(f":material/info: Showing the middle frame: {h.md(why)}.")
        return
    st.video(path, format="video/webm" if path.suffix.lower() == ".webm" else "video/mp4",
             start_time=int(start_s))


def result_card(engine: SearchEngine, index: str, hit) -> None:
    player(engine, index, hit.clip_id, hit.start_s)
    st.markdown(f"**#{hit.rank}** · clip {hit.clip_id} · score **{hit.score:.3f}**")
    st.caption(f"appearance {hit.static_score:+.3f} · motion {hit.dynamic_score:+.3f}")
    name = h.display_name(hit.video_path, roots(engine))
    st.caption(f"{h.md(Path(name).name)} · {h.seconds(hit.start_s, hit.end_s)}")
    b1, b2 = st.columns(2)
    b1.button("Why?", key=f"why_{hit.clip_id}", on_click=go, args=("Explain", None, hit.clip_id, "A search result"),
              width="stretch", help="Compare its trajectory with the query's")
    b2.button("Search", key=f"again_{hit.clip_id}", on_click=go, args=("Search", hit.clip_id), width="stretch",
              help="Search with this clip")


def explain_ui(engine: SearchEngine, index: str) -> None:
    st.header("Explain")
    last = st.session_state.get("last_search")
    options = ["A clip", "A search result"] if last and last["hits"] else ["A clip"]
    if st.session_state.get("explain_what") not in options:
        st.session_state.explain_what = "A clip"
    what = st.segmented_control("Explain", options, key="explain_what", required=True)
    st.caption("Each dot is one frame's backbone feature, projected to 2-D (PCA) and coloured by time. The "
               "dashed line is LiFT's reconstruction of the frames from a straight line in its latent space "
               "(R² near 1: it follows the clip; near 0 or below: it keeps little more than the clip's look). "
               "The arrow is the frames' straight-line trend from first to last: the way the clip moves.")
    if what == "A search result":
        explain_result(engine, index, last)
        return
    clip_id = clip_picker(engine, index, "Clip", key="explain_pick")
    if clip_id is None:
        st.info("Choose a clip.")
        return
    clip = engine.clip(clip_id)
    exp = project(trajectory(index, clip_id, f"clip {clip_id}"))
    st.pyplot(trajectory_figure(exp), width="content")
    tr = exp.trajectories[0]
    st.markdown(f"**clip {clip.clip_id}**: {len(tr.points)} frames over {h.seconds(clip.start_s, clip.end_s)}; "
                f"the two axes hold {exp.explained.sum():.0%} of the spread of its features.")


def explain_result(engine: SearchEngine, index: str, last: dict) -> None:
    hits = {hit.clip_id: hit for hit in last["hits"]}
    if st.session_state.get("explain_result") not in hits:
        st.session_state.explain_result = next(iter(hits))
    rid = st.selectbox("Result", list(hits), key="explain_result",
                       format_func=lambda i: f"#{hits[i].rank} · clip {i} · score {hits[i].score:.3f}")
    hit = hits[rid]
    kind, qid = last["query"]
    if kind == "clip":
        qtr = trajectory(index, qid, f"query: clip {qid}")
    else:
        held = st.session_state.get("upload")
        if not held or held["file_id"] != qid:
            st.info("The uploaded query is gone: search again.")
            return
        qtr = Trajectory.of(held["features"], held["reconstruction"], label="query: upload")
    rtr = trajectory(index, rid, f"result: clip {rid}" + (" (opposite action)" if last["opposite"] else ""))
    exp = compare(qtr, rtr)
    st.pyplot(trajectory_figure(exp), width="stretch")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Score", f"{hit.score:.3f}")
    m2.metric("Appearance part", f"{hit.static_score:+.3f}", help="cosine of LiFT's static descriptors")
    m3.metric("Motion part", f"{hit.dynamic_score:+.3f}",
              help="cosine of LiFT's dynamic descriptors" + (", the query's reversed" if last["opposite"] else ""))
    m4.metric("Arrows' cosine", f"{exp.arrow_cosine:+.2f}", help="-1: the clips move exactly opposite ways")
    w = last["motion"]
    if last["opposite"]:
        st.markdown(f"Opposite-action search: the query's motion was **reversed** before comparing, so a "
                    f"motion part of {hit.dynamic_score:+.2f} means clip {rid} moves "
                    f"{'the opposite way' if hit.dynamic_score > 0 else 'the same way'}. "
                    f"Score = {1 - w:.2f} × {hit.static_score:.3f} + {w:.2f} × {hit.dynamic_score:.3f}.")
    else:
        st.markdown(f"Score = {1 - w:.2f} × appearance {hit.static_score:.3f} + {w:.2f} × motion "
                    f"{hit.dynamic_score:.3f}.")


def index_ui(engine: SearchEngine, index: str) -> None:
    st.header("Index")
    s = engine.status()
    c = st.columns(5)
    c[0].metric("Videos", s["videos"])
    c[1].metric("Clips", s["clips"])
    c[2].metric("Searchable vectors", s["vectors"])
    c[3].metric("Failed files", s["failures"])
    c[4].metric("Disk use", f"{s['disk_bytes'] / 2**20:.1f} MB")
    lift = s.get("lift") or {}
    samp = s.get("sampling") or {}
    rows = {
        "Index folder": s["index"],
        "Indexed folders": ", ".join(s.get("roots") or []),
        "Backbone": s.get("backbone"),
        "LiFT": f"{lift.get('spec')} · latent d = {lift.get('latent_dim')} · weights {lift.get('hash')}",
        "Descriptor size": s["dim"],
        "Vector search": search_summary(s["search"]),
        "Sampling": (f"{samp.get('frames_per_clip')} frames per clip; videos up to {samp.get('max_single_s')} s "
                     f"are one clip, longer ones {samp.get('window_s')} s windows every {samp.get('stride_s')} s"),
        "Created": s.get("created_at"),
        "Last updated": s.get("updated_at"),
    }
    st.table({"Setting": list(rows), "Value": [str(v) for v in rows.values()]}, border="horizontal", hide_index=True)
    if lift.get("provenance"):
        with st.expander("How the LiFT weights were made"):
            st.json(lift["provenance"])
    failures_panel(engine)


# ---- main -----------------------------------------------------------------------------------------
def main() -> None:
    st.set_page_config(page_title="lift-search", page_icon=":material/movie:", layout="wide")
    index = index_path()
    if not index:
        st.error("No index given: start the app with `lift-search ui --index IDX`.")
        st.stop()
    index = str(Path(index).expanduser().absolute())  # the key of every cached read
    try:
        engine = get_engine(index)
    except LiftSearchError as e:
        st.error(str(e))
        st.stop()
    st.html("<style>[data-testid='stMainBlockContainer']{padding-top:2.5rem}</style>")
    read_query_params(engine)  # before the page radio: ?clip=ID alone switches to Search
    with st.sidebar:
        st.title("lift-search")
        st.caption("Time-aware video search with LiFT")
        page = st.radio("Page", PAGES, key="page", bind="query-params", label_visibility="collapsed")
        st.divider()
        st.caption(f"{h.md(Path(index).name)} · {library_facts(index)[1]} clips")
    {"Library": library_ui, "Search": search_ui, "Explain": explain_ui, "Index": index_ui}[page](engine, index)


main()
