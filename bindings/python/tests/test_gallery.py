"""Gallery: build from a folder, search, save/load/view; a gallery written by `bridge gallery`
opens in Python and in pip's usearch, and the CLI and Python searches agree."""

import json

import numpy as np
import pytest

import bridgeface
from conftest import run_cli


@pytest.fixture(scope="module")
def model(weights):
    return bridgeface.Model(weights=weights)


def test_build_search_save_load(model, image_folder, tmp_path):
    g = bridgeface.Gallery.build(model, image_folder)
    assert len(g) == 24 and g.dimensions == 128
    assert sorted(set(g.labels)) == [f"person{i}" for i in range(6)]
    assert g.model["kind"] == "student" and g.model == model.tag
    paths = g.paths
    emb = model.embed(paths)
    for i in range(0, 24, 5):
        top = g.search(emb[i], k=3)
        assert top[0][2] == paths[i] and top[0][0] == g.labels[i]
        assert top[0][1] == pytest.approx(1.0, abs=2e-3)  # f16 storage
        assert top[0][1] >= top[1][1] >= top[2][1]
    g.save(tmp_path / "g")
    for opened in (bridgeface.Gallery.load(tmp_path / "g"), bridgeface.Gallery.load(tmp_path / "g", view=True)):
        assert opened.labels == g.labels and opened.paths == paths
        assert opened.search(emb, k=2) == g.search(emb, k=2)
    viewed = bridgeface.Gallery.load(tmp_path / "g", view=True)
    with pytest.raises(bridgeface.BridgefaceError, match="read-only"):
        viewed.add(emb[:1], "x")


def test_add_and_bad_input(model):
    g = bridgeface.Gallery(dimensions=128, model=model)
    with pytest.raises(bridgeface.BridgefaceError, match="empty"):
        g.search(np.ones(128, np.float32))
    v = np.eye(3, 128, dtype=np.float32)
    g.add(v, ["a", "b", "c"], ["pa", "pb", "pc"])
    g.add(v[:1] * -1, "d")
    assert g.labels == ["a", "b", "c", "d"] and g.paths[3] == ""
    assert [m[0] for m in g.search(v[1], k=4)][0] == "b"
    bad = [
        (lambda: g.add(v, ["a"]), "3 embeddings"),
        (lambda: g.add(v.astype(np.float64), "a"), "float64"),
        (lambda: g.add(np.ones((1, 64), np.float32), "a"), "64-D"),
        (lambda: g.add(np.full((1, 128), np.nan, np.float32), "a"), "non-finite"),
        (lambda: g.search(np.ones(64, np.float32)), "64-D"),
        (lambda: g.search(np.ones(128, np.float32), k=0), "at least 1"),
        (lambda: g.search([1.0] * 128), "float32 NumPy array"),
        (lambda: bridgeface.Gallery.load("/no/such/gallery"), "not a bridgeface gallery"),
        (lambda: bridgeface.Gallery(dimensions=0), "must be 1 to"),
    ]
    for call, message in bad:
        with pytest.raises(bridgeface.BridgefaceError) as e:
            call()
        assert message in str(e.value), str(e.value)


def test_cli_gallery_opens_in_python_and_usearch(model, image_folder, weights, bridge_bin, tmp_path):
    g_dir = tmp_path / "cli.gallery"
    out = run_cli(bridge_bin, "gallery", "build", image_folder, "--out", g_dir, "--weights", weights)
    assert out.returncode == 0, out.stderr
    g = bridgeface.Gallery.load(g_dir)
    assert len(g) == 24 and g.model == model.tag
    probes = [g.paths[1], g.paths[6], g.paths[17]]
    out = run_cli(bridge_bin, "gallery", "search", g_dir, *probes, "--k", "3", "--json", "--weights", weights)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    py = g.search(model.embed(probes), k=3)
    for c, p in zip(cli, py):
        assert [m["label"] for m in c["matches"]] == [m[0] for m in p]
        assert [m["path"] for m in c["matches"]] == [m[2] for m in p]
        np.testing.assert_allclose([m["similarity"] for m in c["matches"]], [m[1] for m in p], atol=1e-6)
    # pip's usearch opens the same index file and finds the same nearest keys.
    usearch_index = pytest.importorskip("usearch.index")
    idx = usearch_index.Index.restore(str(g_dir / "index.usearch"))
    assert len(idx) == 24 and idx.ndim == 128
    found = idx.search(model.embed(probes), 1)
    assert [g.paths[int(k)] for k in found.keys[:, 0]] == probes
    # `add` through the CLI, then `info`.
    out = run_cli(bridge_bin, "gallery", "add", g_dir, probes[0], "--label", "newcomer", "--weights", weights)
    assert out.returncode == 0, out.stderr
    assert bridgeface.Gallery.load(g_dir).labels[-1] == "newcomer"
    out = run_cli(bridge_bin, "gallery", "info", g_dir)
    assert out.returncode == 0 and "faces: 25 of 7 identities" in out.stdout, out.stdout


def test_parquet_from_pyarrow_in_python_and_the_cli(model, bridge_bin, tmp_path):
    """A table in Embedder's layout written by pyarrow (not Ray): gallery_from_parquet and
    `bridge gallery build --from-parquet` read it alike; both honour the `model` column."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    r = np.random.default_rng(5)
    v = r.standard_normal((20, 128)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = [f"id{i % 4}" for i in range(20)]
    paths = [f"/faces/{i}.png" for i in range(20)]

    def write(folder, tag):
        folder.mkdir()
        pq.write_table(
            pa.table(
                {
                    "embedding": pa.array(list(v), type=pa.list_(pa.float32())),
                    "label": labels,
                    "path": paths,
                    "model": [json.dumps(tag)] * 20,
                }
            ),
            str(folder / "part-0.parquet"),
        )

    write(tmp_path / "same", model.tag)
    g = bridgeface.gallery_from_parquet(tmp_path / "same", model=model)
    assert g.labels == labels and g.paths == paths
    out = tmp_path / "g"
    res = run_cli(bridge_bin, "gallery", "build", "--from-parquet", tmp_path / "same", "--out", out)
    assert res.returncode == 0, res.stderr
    cli = bridgeface.Gallery.load(str(out))
    assert cli.model == model.tag and cli.labels == labels and cli.paths == paths
    assert [m[0][2] for m in cli.search(v, k=1)] == paths

    other = dict(model.tag, weights_sha256="0" * 64)
    write(tmp_path / "other", other)
    with pytest.raises(bridgeface.BridgefaceError, match="not by the given model"):
        bridgeface.gallery_from_parquet(tmp_path / "other", model=model)
