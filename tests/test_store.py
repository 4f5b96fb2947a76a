"""The vector store against exact numpy search on seeded synthetic descriptors: segments, tombstones,
merging, the approximate (IVF) index with exact re-scoring, restricted searches, its files, and the
migration of an older index's single vectors.faiss."""
import os

import numpy as np
import pytest

from indexer.legacy import save_legacy
from indexer.segments import MANIFEST, referenced, read_manifest
from indexer.store import StoreError, VectorStore
from lift.config import StoreConfig

D = 64  # [m | dyn], 32 + 32


def descriptors(rng, n, centres=40):
    """Clustered [m | dyn] descriptors, both halves unit length (as LiFT.describe makes them)."""
    c = rng.standard_normal((centres, D)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, D)).astype(np.float32)
    h = D // 2
    x[:, :h] /= np.linalg.norm(x[:, :h], axis=1, keepdims=True)
    x[:, h:] /= np.linalg.norm(x[:, h:], axis=1, keepdims=True)
    return x


def engine_query(vec, motion, reverse):
    h = D // 2
    dyn = -vec[h:] if reverse else vec[h:]
    return np.concatenate([(1 - motion) * vec[:h], motion * dyn]).astype(np.float32)


def exact(base_ids, base, q, k, allowed=None):
    s = base @ q
    if allowed is not None:
        s = np.where(np.isin(base_ids, allowed), s, -np.inf)
    top = np.argsort(-s, kind="stable")[:k]
    return base_ids[top], s[top]


def recall(got, truth_ids, truth_scores, base_ids, base, q):
    """Share of the exact top-k found, counting a tie with the k-th exact score as found."""
    kth = truth_scores[-1] - 1e-6
    scores = dict(zip(base_ids.tolist(), (base @ q).tolist()))
    return sum(1 for g in got if g >= 0 and scores[int(g)] >= kth) / len(truth_ids)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    base = descriptors(rng, 3000)
    ids = np.sort(rng.choice(10**6, size=3000, replace=False)).astype(np.int64)
    return ids, base


def build(folder, ids, base, chunks=6, mode="auto", **cfg):
    store = VectorStore(folder, D, meta={"lift_hash": "abc"}, config=StoreConfig(**cfg), mode=mode)
    for part in np.array_split(np.arange(len(ids)), chunks):  # one segment per checkpoint
        store.add(ids[part], base[part])
        store.commit()
    return store


def test_flat_search_is_exact_across_segments_and_reopening(tmp_path, data):
    ids, base = data
    store = build(tmp_path / "v", ids, base)
    assert store.kind == "exact" and len(store.segments) == 6
    back = VectorStore.open(tmp_path / "v", D)
    assert back.meta == {"lift_hash": "abc"} and len(back) == 3000
    np.testing.assert_array_equal(back.ids(), ids)
    q = base[:20] @ np.eye(D, dtype=np.float32)
    scores, got = back.search(q, 10)
    for i in range(20):
        want, want_s = exact(ids, base, q[i], 10)
        np.testing.assert_array_equal(got[i], want)
        np.testing.assert_allclose(scores[i], want_s, rtol=1e-5)
    np.testing.assert_array_equal(back.vectors(ids[[5, 2999, 0]]), base[[5, 2999, 0]])
    with pytest.raises(StoreError, match="no vector"):
        back.vectors([1])


def test_removal_tombstones_and_merging_keep_the_contents(tmp_path, data):
    ids, base = data
    folder = tmp_path / "v"
    store = build(folder, ids, base, chunks=12, merge_factor=3)
    gone = ids[::7]
    assert store.remove(gone) == len(gone) and store.remove(gone) == 0
    store.commit()
    reader = VectorStore.open(folder, D)  # opened before the merges: keeps its mapped files
    assert len(reader) == 3000 - len(gone) and read_manifest(folder)["tombstones"]["count"] == len(gone)
    did = store.maintain()
    assert did["merged"] >= 9 and len(store.segments) < 12
    keep = np.setdiff1d(ids, gone)
    for s in (store, VectorStore.open(folder, D), reader):  # the merged store, reopened, and the old reader
        np.testing.assert_array_equal(s.ids(), keep)
        _, got = s.search(base[:5], 20)
        assert not np.isin(got, gone).any()
        np.testing.assert_array_equal(s.vectors(keep[::50]), base[np.isin(ids, keep[::50])])
    on_disk = {f.name for f in folder.iterdir()}
    assert on_disk == referenced(read_manifest(folder)) | {MANIFEST}  # nothing left over
    count, high, total = VectorStore.open(folder, D).stats()
    assert (count, high, total) == (len(keep), int(keep.max()), int(keep.sum()))


def test_a_segment_with_many_deleted_rows_is_rewritten_without_them(tmp_path, data):
    ids, base = data
    store = build(tmp_path / "v", ids, base, chunks=2, merge_factor=8)
    first = store.segments[0].ids
    store.remove(first[: len(first) // 2])
    store.commit()
    assert store.maintain()["purged"] == 1
    assert len(store.segments[0].ids) == len(first) - len(first) // 2 and store.segments[0].dead is None
    assert read_manifest(tmp_path / "v")["tombstones"] is None


@pytest.mark.parametrize("codes", ["SQ8", "PQ"])
def test_forced_ivf_recall_and_exact_scores(tmp_path, data, codes):
    """Every approximate index is tested against exact search: forward, reverse and motion-weighted queries
    (none of them a stored vector) keep their recall, and every returned score is the exact one."""
    ids, base = data
    cfg = dict(sq8_max_bytes=0 if codes == "PQ" else 1 << 30, candidates=128)
    store = VectorStore(tmp_path / "v", D, meta={}, config=StoreConfig(**cfg), mode="ivf")
    for part in np.array_split(np.arange(3000), 3):
        store.add(ids[part], base[part])
        store.commit()
    store.maintain()
    assert store.kind == "ivf" and codes in store.describe()["index"]
    store.add(np.array([10**7]), base[:1] * 0 + base[1])  # a checkpoint after training: encoded as written
    store.commit()
    all_ids, all_base = np.append(ids, 10**7), np.vstack([base, base[1]])
    reader = VectorStore.open(tmp_path / "v", D)
    for motion, reverse in [(0.5, False), (0.5, True), (0.25, False), (0.75, True), (0.0, False), (1.0, True)]:
        rec = []
        for i in range(0, 3000, 60):
            q = engine_query(base[i], motion, reverse)
            scores, got = reader.search(q, 10)
            want, want_s = exact(all_ids, all_base, q, 10)
            rec.append(recall(got[0], want, want_s, all_ids, all_base, q))
            np.testing.assert_allclose(scores[0], reader.vectors(got[0]) @ q, rtol=1e-6)  # exact scores
            assert np.all(np.diff(scores[0]) <= 0)
        assert np.mean(rec) >= 0.95, (motion, reverse, np.mean(rec))
    _, forced = reader.search(engine_query(base[3], 0.5, False), 10, exact=True)
    np.testing.assert_array_equal(forced[0], exact(all_ids, all_base, engine_query(base[3], 0.5, False), 10)[0])
    assert 10**7 in reader.search(base[1], 3)[1][0]


@pytest.mark.parametrize("mode, exact_max", [("flat", 50_000), ("ivf", 50_000), ("ivf", 20)])
def test_allowed_ids_restrict_the_search_without_losing_recall(tmp_path, data, mode, exact_max):
    """Exact in flat mode and, on an IVF store, for as few ids as exact_max (all re-scored); more go through the
    IVF index with a selector, probing proportionally more lists (recall >= 0.95)."""
    ids, base = data
    store = VectorStore(tmp_path / "v", D, config=StoreConfig(candidates=64, exact_max=exact_max), mode=mode)
    store.add(ids, base)
    store.commit()
    store.maintain()
    rng = np.random.default_rng(1)
    for share in (0.02, 0.3):
        allowed = rng.choice(ids, size=int(share * len(ids)), replace=False)
        rec = []
        for i in range(0, 3000, 100):
            q = engine_query(base[i], 0.5, False)
            _, got = store.search(q, 10, allowed=allowed)
            assert np.isin(got[0][got[0] >= 0], allowed).all()
            want, want_s = exact(ids, base, q, 10, allowed)
            rec.append(recall(got[0], want, want_s, ids, base, q))
        assert np.mean(rec) >= (1.0 if exact_max > len(allowed) or mode == "flat" else 0.95), (share, np.mean(rec))


def test_the_ivf_index_follows_size_and_mode(tmp_path, data):
    ids, base = data
    store = VectorStore(tmp_path / "v", D, config=StoreConfig(exact_max=1000, retrain_growth=1.5))
    store.add(ids[:900], base[:900])
    store.commit()
    assert store.maintain()["ann"] is None and store.kind == "exact"
    store.add(ids[900:1500], base[900:1500])
    store.commit()
    assert store.maintain()["ann"] and store.kind == "ivf"   # past exact_max: trained
    trained = store.describe()["trained_on"]
    store.add(ids[1500:], base[1500:])
    store.commit()
    store.maintain()
    assert store.describe()["trained_on"] > trained          # grown past retrain_growth x: trained again
    store.mode = "flat"
    assert store.maintain()["ann"] == "dropped" and VectorStore.open(tmp_path / "v", D).kind == "exact"
    assert not [f for f in (tmp_path / "v").iterdir() if f.name.startswith(("codes-", "ann-"))]


def test_a_failed_commit_leaves_the_store_as_it_was(tmp_path, data, monkeypatch):
    ids, base = data
    store = build(tmp_path / "v", ids[:100], base[:100], chunks=1)
    store.add(ids[100:200], base[100:200])
    store.remove(ids[:10])
    monkeypatch.setenv("LIFT_SEARCH_TEST_POINTS", "vectors-write=enospc")
    with pytest.raises(OSError):
        store.commit()
    monkeypatch.delenv("LIFT_SEARCH_TEST_POINTS")
    store.rollback()
    np.testing.assert_array_equal(store.ids(), ids[:100])
    np.testing.assert_array_equal(VectorStore.open(tmp_path / "v", D).ids(), ids[:100])
    assert not [f for f in (tmp_path / "v").iterdir() if f.name.endswith(".tmp")]


def test_an_older_index_vectors_faiss_is_read_and_migrated(tmp_path, data):
    ids, base = data
    legacy = tmp_path / "vectors.faiss"
    save_legacy(legacy, ids[:50], base[:50], {"lift_hash": "old"})
    reader = VectorStore.open(tmp_path / "vectors", D, legacy=legacy)
    assert reader.meta == {"lift_hash": "old"} and len(reader) == 50
    np.testing.assert_array_equal(reader.search(base[3], 1)[1][0], ids[3:4])
    writer = VectorStore.open(tmp_path / "vectors", D, writable=True, legacy=legacy)
    writer.commit()
    assert not legacy.exists() and read_manifest(tmp_path / "vectors")["migrated_from"]
    back = VectorStore.open(tmp_path / "vectors", D, legacy=legacy)
    assert back.meta == {"lift_hash": "old"} and np.array_equal(back.vectors(ids[:50]), base[:50])


def test_foreign_damaged_or_wrong_dim_files_are_refused(tmp_path, data):
    import faiss

    ids, base = data
    folder = tmp_path / "v"
    build(folder, ids[:100], base[:100], chunks=1)
    with pytest.raises(StoreError, match="128-d"):
        VectorStore.open(folder, 128)
    seg = folder / read_manifest(folder)["segments"][0]["file"]
    good = seg.read_bytes()
    raw = bytearray(good)
    raw[-5] ^= 0xFF  # a flipped bit in the vectors: found by verify (status --verify, and before a merge)
    seg.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="checksum"):
        VectorStore.open(folder, D).verify()
    faiss.write_index(faiss.IndexFlatIP(D), str(seg))  # a FAISS file where a segment should be
    with pytest.raises(StoreError, match="not written by lift-search"):
        VectorStore.open(folder, D)
    seg.write_bytes(good[: len(good) // 2])           # cut short
    with pytest.raises(StoreError, match="damaged"):
        VectorStore.open(folder, D)
    seg.write_bytes(good)
    manifest = folder / MANIFEST
    manifest.write_text(manifest.read_text().replace('"rows": 100', '"rows": 99'))
    with pytest.raises(StoreError, match="checksum"):
        VectorStore.open(folder, D)
    legacy = tmp_path / "vectors.faiss"
    faiss.write_index(faiss.IndexFlatIP(D), str(legacy))
    with pytest.raises(StoreError, match="not written by lift-search"):
        VectorStore.open(tmp_path / "none", D, legacy=legacy)


def test_wrong_shapes_and_reused_ids_are_refused(tmp_path):
    store = VectorStore(tmp_path / "v", 8)
    with pytest.raises(StoreError):
        store.add([1, 2], np.zeros((2, 9)))
    store.add([1, 2], np.ones((2, 8)))
    with pytest.raises(StoreError, match="already"):
        store.add([2], np.ones((1, 8)))
    reader = VectorStore.open(tmp_path / "v", 8)
    with pytest.raises(StoreError, match="for reading"):
        reader.commit()


def test_a_reader_retries_when_a_commit_removes_files_under_it(tmp_path, data, monkeypatch):
    """A reader between reading the manifest and opening its files, while a writer merges: it reads the
    manifest again instead of failing."""
    ids, base = data
    folder = tmp_path / "v"
    writer = build(folder, ids, base, chunks=4, merge_factor=2)
    from indexer import store as store_mod

    real = store_mod.read_manifest
    calls = []

    def racing(f):
        doc = real(f)
        if not calls:
            writer.maintain()  # merges and deletes the files `doc` lists
        calls.append(1)
        return doc

    monkeypatch.setattr(store_mod, "read_manifest", racing)
    back = VectorStore.open(folder, D)
    assert len(calls) >= 2 and len(back) == 3000 and len(back.segments) < 4
    assert os.environ.get("LIFT_SEARCH_TEST_POINTS") is None


def test_a_segment_whose_rows_are_all_deleted_goes(tmp_path, data):
    ids, base = data
    store = build(tmp_path / "v", ids[:300], base[:300], chunks=3)
    store.remove(store.segments[1].ids)
    store.commit()
    assert store.maintain()["purged"] == 1 and len(store.segments) == 2
    back = VectorStore.open(tmp_path / "v", D)
    np.testing.assert_array_equal(back.ids(), np.concatenate([ids[:100], ids[200:300]]))
    assert read_manifest(tmp_path / "v")["tombstones"] is None


def test_a_writer_does_not_keep_what_it_has_written_in_memory(tmp_path):
    """Written rows are read back from their files, memory-mapped: a bulk build's memory does not grow with
    the vectors it has written (numpy's allocations are traced by tracemalloc)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    store = VectorStore(tmp_path / "v", D, config=StoreConfig(segment_rows=10_000), mode="flat")
    written = 0
    tracemalloc.start()
    try:
        for step in range(6):
            vectors = descriptors(rng, 10_000)
            store.add(np.arange(written + 1, written + 10_001), vectors)
            store.commit()
            written += len(vectors)
            del vectors
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 0.1 * written * D * 4, f"{held / 1e6:.1f} MB held after writing {written * D * 4 / 1e6:.1f} MB"
    q = descriptors(rng, 1)[0]
    assert store.search(q[None], 5)[1][0][0] >= 1  # (and the mapped rows serve)


@pytest.mark.parametrize("codes, quantizer", [("SQ8", "flat"), ("PQ8", "HNSW32")])
def test_the_searchable_index_is_faiss_add_sa_codes_with_lists_sized_once(codes, quantizer):
    """ann.searchable fills each inverted list once at its final size: the same index as FAISS's own
    add_sa_codes (same lists, same order, so the same results), without lists grown by doubling."""
    import faiss

    from indexer import ann

    rng = np.random.default_rng(3)
    x = descriptors(rng, 6000)
    index, params = ann.train(x[:3000], ann.AnnParams(32, quantizer, codes, nprobe=4, candidates=64))
    template = faiss.serialize_index(index).tobytes()
    ids, c = np.arange(10, 6010, dtype=np.int64), ann.encode(index, x)
    ours = ann.searchable(template, lambda: [(c[:2500], ids[:2500]), (c[2500:], ids[2500:])], params)
    ref = faiss.deserialize_index(np.frombuffer(template, np.uint8))
    ref.add_sa_codes(c, ids)
    faiss.extract_index_ivf(ref).nprobe = params.nprobe
    if quantizer != "flat":
        faiss.downcast_index(faiss.extract_index_ivf(ref).quantizer).hnsw.efSearch = max(64, 2 * params.nprobe)
    assert ours.ntotal == ref.ntotal == 6000
    (d1, i1), (d2, i2) = ours.search(x[:50], 10), ref.search(x[:50], 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(d1, d2)
    lists = faiss.extract_index_ivf(ours).invlists
    assert sum(lists.list_size(i) for i in range(32)) == 6000
