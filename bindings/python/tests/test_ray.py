"""bridgeface.ray.Embedder on a real local Ray cluster: read_binary_files over a few hundred
generated images, map_batches(Embedder, concurrency=2), write_parquet; the rows must equal a
direct Model.embed, and the Parquet output must become a gallery, in Python and with
`bridge gallery build --from-parquet`. Then the same pipeline on a two-node cluster
(ray.cluster_utils.Cluster: a head and a worker node, each its own raylet, on this machine)."""

import json
import os

import numpy as np
import pytest

import bridgeface
from conftest import run_cli, synthetic_image, write_ppm

if os.environ.get("BRIDGEFACE_REQUIRE_RAY"):
    import ray  # CI: a missing Ray is a failure, not a skip
else:
    ray = pytest.importorskip("ray")


def image_folder_300(root):
    """12 identities x 25 generated images: IDENTITY/IMAGE.ppm."""
    for ident in range(12):
        d = root / f"id{ident:02d}"
        d.mkdir(parents=True)
        for k in range(25):
            write_ppm(d / f"{k:02d}.ppm", synthetic_image(100 * ident + k, size=32))


def test_ray_map_batches_equals_direct_embed(tmp_path, weights, bridge_bin):
    import pyarrow.parquet as pq

    from bridgeface.ray import main

    root = tmp_path / "images"
    image_folder_300(root)
    out = tmp_path / "embeddings"
    # docs/PYTHON.md's command, `python -m bridgeface.ray IMAGES OUT ...`: a local
    # ray.init(num_cpus=2), map_batches(Embedder, concurrency=2), write_parquet. Two actors of
    # half a CPU each leave the read tasks a CPU of the two.
    argv = [str(root), str(out), "--num-cpus", "2", "--concurrency", "2", "--actor-cpus", "0.5"]
    assert main(argv + ["--weights", weights]) == 0
    table = pq.read_table(str(out))
    paths = [p.split("://")[-1] for p in table.column("path").to_pylist()]
    assert sorted(os.path.relpath(p, root) for p in paths) == sorted(
        f"id{i:02d}/{k:02d}.ppm" for i in range(12) for k in range(25)
    )
    got = bridgeface._embedding_matrix(table.column("embedding"))
    direct = bridgeface.Model(weights=weights).embed(paths)
    np.testing.assert_allclose(got, direct, rtol=0, atol=1e-6)
    assert table.column("label").to_pylist() == [os.path.basename(os.path.dirname(p)) for p in paths]

    model = bridgeface.Model(weights=weights)
    assert set(table.column("model").to_pylist()) == {json.dumps(model.tag, sort_keys=True)}
    g = bridgeface.gallery_from_parquet(out, model=model)
    assert len(g) == 300 and len(set(g.labels)) == 12
    top = g.search(direct[:5], k=1)
    assert [m[0][2].split("://")[-1] for m in top] == paths[:5]

    # The CLI turns the same files into a gallery tagged with the Embedder's model, so that
    # `bridge gallery search` embeds probes with the same weights; each probe finds itself.
    gdir = tmp_path / "gallery"
    r = run_cli(bridge_bin, "gallery", "build", "--from-parquet", out, "--out", gdir)
    assert r.returncode == 0, r.stderr
    assert "300 faces of 12 identities" in r.stdout, r.stdout
    cli = bridgeface.Gallery.load(str(gdir))
    assert cli.model == model.tag and cli.labels == table.column("label").to_pylist()
    probes = paths[::60]
    r = run_cli(bridge_bin, "gallery", "search", gdir, *probes, "--k", "1", "--json", "--weights", weights)
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    assert [f["matches"][0]["path"].split("://")[-1] for f in found] == probes
    assert all(f["matches"][0]["similarity"] > 0.999 for f in found)  # f16-stored copies
    # And from Python, the CLI's gallery answers the direct embeddings with their own rows.
    top = cli.search(direct, k=1)
    assert [m[0][2].split("://")[-1] for m in top] == paths


def test_ray_two_node_cluster_equals_direct_embed(tmp_path, weights):
    """docs/PYTHON.md's multi-node command on Ray's own multi-node test harness: a head with no
    CPUs (it only coordinates, as on a real cluster) and a worker node with 2, so every read
    task and Embedder actor runs on the second node; the driver joins with --address."""
    import pyarrow.parquet as pq
    from ray.cluster_utils import Cluster

    from bridgeface.ray import main

    root = tmp_path / "images"
    image_folder_300(root)
    out = tmp_path / "embeddings"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and sorted(n["Resources"].get("CPU", 0) for n in alive) == [0, 2]
        ray.shutdown()
        argv = [str(root), str(out), "--address", cluster.address, "--concurrency", "2", "--actor-cpus", "0.5"]
        assert main(argv + ["--weights", weights]) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    table = pq.read_table(str(out))
    paths = [p.split("://")[-1] for p in table.column("path").to_pylist()]
    assert len(paths) == 300
    got = bridgeface._embedding_matrix(table.column("embedding"))
    direct = bridgeface.Model(weights=weights).embed(paths)
    np.testing.assert_allclose(got, direct, rtol=0, atol=1e-6)
