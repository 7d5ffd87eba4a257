"""bridgeface.ray.Embedder on a real local Ray cluster: read_binary_files over a few hundred
generated images, map_batches(Embedder, concurrency=2), write_parquet; the rows must equal a
direct Model.embed, and the Parquet output must become a gallery."""

import os

import numpy as np
import pytest

import bridgeface
from conftest import synthetic_image, write_ppm

if os.environ.get("BRIDGEFACE_REQUIRE_RAY"):
    import ray  # CI: a missing Ray is a failure, not a skip
else:
    ray = pytest.importorskip("ray")


def test_ray_map_batches_equals_direct_embed(tmp_path, weights):
    import pyarrow.parquet as pq

    from bridgeface.ray import main

    root = tmp_path / "images"
    for ident in range(12):
        d = root / f"id{ident:02d}"
        d.mkdir(parents=True)
        for k in range(25):  # 300 images
            write_ppm(d / f"{k:02d}.ppm", synthetic_image(100 * ident + k, size=32))
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

    g = bridgeface.gallery_from_parquet(out, model=bridgeface.Model(weights=weights))
    assert len(g) == 300 and len(set(g.labels)) == 12
    top = g.search(direct[:5], k=1)
    assert [m[0][2].split("://")[-1] for m in top] == paths[:5]
