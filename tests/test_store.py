"""The vector store against exact numpy search on seeded synthetic vectors, and its file format."""
import numpy as np
import pytest

from indexer.store import MAGIC, StoreError, VectorStore


def unit(rng, n, d):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    base, queries = unit(rng, 2000, 64), unit(rng, 50, 64)
    ids = rng.choice(10**6, size=2000, replace=False).astype(np.int64)
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    return base, queries, ids, ids[exact]


def test_flat_search_equals_exact_numpy(data):
    base, queries, ids, truth = data
    store = VectorStore(64)
    store.add(ids, base)
    scores, got = store.search(queries, 10)
    np.testing.assert_array_equal(got, truth)
    np.testing.assert_allclose(scores[:, 0], np.max(queries @ base.T, axis=1), rtol=1e-5)


def test_hnsw_recall_against_exact(data):
    base, queries, ids, truth = data
    store = VectorStore(64, kind="hnsw")
    store.add(ids, base)
    _, got = store.search(queries, 10)
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth)])
    assert recall >= 0.9, recall


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_remove_and_reconstruct(data, kind):
    base, _, ids, _ = data
    store = VectorStore(64, kind=kind)
    store.add(ids[:100], base[:100])
    assert store.remove(ids[:10]) == 10
    assert set(store.ids().tolist()) == set(ids[10:100].tolist())
    np.testing.assert_allclose(store.vectors(ids[50:52]), base[50:52], rtol=1e-6)


def test_save_load_round_trip_and_atomic(tmp_path, data):
    base, queries, ids, _ = data
    store = VectorStore(64, meta={"lift_hash": "abc"})
    store.add(ids, base)
    store.save(tmp_path / "v.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]  # no temp file left
    back = VectorStore.load(tmp_path / "v.faiss", 64)
    assert back.meta == {"lift_hash": "abc"} and len(back) == 2000
    np.testing.assert_array_equal(back.search(queries, 5)[1], store.search(queries, 5)[1])


def test_foreign_damaged_or_wrong_dim_files_are_refused(tmp_path, data):
    import faiss

    base, _, ids, _ = data
    foreign = tmp_path / "foreign.faiss"
    faiss.write_index(faiss.IndexFlatIP(64), str(foreign))
    with pytest.raises(StoreError, match="not written by lift-search"):
        VectorStore.load(foreign, 64)
    store = VectorStore(64)
    store.add(ids[:10], base[:10])
    store.save(tmp_path / "ok.faiss")
    with pytest.raises(StoreError, match="128-d"):
        VectorStore.load(tmp_path / "ok.faiss", 128)
    raw = bytearray((tmp_path / "ok.faiss").read_bytes())
    raw[-5] ^= 0xFF
    (tmp_path / "bad.faiss").write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="checksum"):
        VectorStore.load(tmp_path / "bad.faiss", 64)
    assert (tmp_path / "ok.faiss").read_bytes().startswith(MAGIC)


def test_wrong_vector_shape_is_refused():
    with pytest.raises(StoreError):
        VectorStore(8).add([1, 2], np.zeros((2, 9)))
