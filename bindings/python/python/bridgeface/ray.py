"""Batch embedding on Ray Data: ``ds.map_batches(Embedder, concurrency=N)``.

Each Ray worker (actor) builds one ``Embedder``, which loads the model once and embeds every
batch it is given with ``threads`` CPU threads (default 1: Ray already runs one actor per CPU).
It reads image bytes (``ray.data.read_binary_files``' ``bytes`` column) or a uint8 N x H x W x 3
``image`` column (``ray.data.read_images``), and returns ``embedding`` (float32 N x 128),
``model`` (the model tag as JSON, the same on every row, so that ``bridge gallery build
--from-parquet`` records which weights made the vectors) and, when paths are present, ``path``
and ``label`` (the parent folder's name, for ImageFolder sets).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import numpy as np

from ._native import BridgefaceError, Model


class Embedder:
    """A callable class for ``Dataset.map_batches`` (``batch_format="numpy"``, the default)."""

    def __init__(
        self,
        weights: Optional[str] = None,
        threads: int = 1,
        column: Optional[str] = None,
    ) -> None:
        self.model = Model(weights=weights, threads=threads)
        self.column = column
        self.tag = json.dumps(self.model.tag, sort_keys=True)

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, np.ndarray]:
        column = self.column or ("bytes" if "bytes" in batch else "image")
        if column not in batch:
            raise BridgefaceError(
                f"invalid argument: the batch has no column `{column}` (columns: {sorted(batch)}); "
                "pass Embedder's column="
            )
        data = batch[column]
        if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
            images: Any = data
        else:
            images = [x if isinstance(x, np.ndarray) and x.ndim == 3 else bytes(x) for x in data]
        emb = self.model.embed(images)
        out: Dict[str, np.ndarray] = {
            "embedding": emb,
            "model": np.array([self.tag] * len(emb), dtype=object),
        }
        if "path" in batch:
            paths = [str(p) for p in batch["path"]]
            out["path"] = np.array(paths, dtype=object)
            out["label"] = np.array(
                [os.path.basename(os.path.dirname(p)) for p in paths], dtype=object
            )
        return out


def embed_folder(
    images: str,
    out: str,
    weights: Optional[str] = None,
    concurrency: int = 2,
    batch_size: int = 64,
    threads: int = 1,
    num_cpus: float = 1.0,
) -> int:
    """Embeds every image file under ``images`` (recursively) on the Ray cluster that
    ``ray.init`` joined, with ``concurrency`` Embedder actors reserving ``num_cpus`` each, and
    writes Parquet files (``embedding``, ``model``, ``path``, ``label``) to ``out``. Returns the number of
    rows written. Leave CPUs for the file-reading tasks: on a 2-CPU cluster two actors of 1 CPU
    each would starve them, so use ``num_cpus=0.5`` there."""
    import ray

    ds = ray.data.read_binary_files(images, include_paths=True)
    emb = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"weights": weights, "threads": threads},
        concurrency=concurrency,
        batch_size=batch_size,
        num_cpus=num_cpus,
    )
    emb = emb.materialize()
    emb.write_parquet(out)
    return emb.count()


def main(argv: Optional[list] = None) -> int:
    """``python -m bridgeface.ray IMAGES OUT [--address ADDR] [--concurrency N] ...``"""
    import argparse
    import sys

    import ray

    p = argparse.ArgumentParser(
        prog="python -m bridgeface.ray",
        description="Embed a folder of images on a Ray cluster into Parquet (embedding, model, path, label).",
    )
    p.add_argument("images", help="a folder of images (read recursively; IDENTITY/IMAGE gives labels)")
    p.add_argument("out", help="the output folder of Parquet files")
    p.add_argument("--address", default=None, help="a running cluster (`auto`, or HOST:PORT); default: start a local one")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local cluster started without --address")
    p.add_argument("--concurrency", type=int, default=2, help="Embedder actors (one model each)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per actor")
    p.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs each actor reserves")
    p.add_argument("--weights", default=None, help="student weights; every node must be able to read this path")
    a = p.parse_args(argv)
    try:
        if a.address:
            ray.init(address=a.address, log_to_driver=False)
        else:
            ray.init(num_cpus=a.num_cpus, include_dashboard=False, log_to_driver=False)
        n = embed_folder(
            a.images, a.out, a.weights, a.concurrency, a.batch_size, a.threads, a.actor_cpus
        )
    except BridgefaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    print(f"embedded {n} images into {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
