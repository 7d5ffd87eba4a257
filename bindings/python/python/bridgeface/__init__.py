"""bridgeface: low-resolution face recognition on bridgeface's Rust kernels.

``Model`` is the BridgeNet student (8-32 px faces), ``Teacher`` the SFace teacher (112x112),
``Gallery`` a persistent, searchable set of labelled embeddings (usearch HNSW, cosine, f16).
Failures raise ``BridgefaceError`` with the ``bridge`` CLI's one-line message.
``bridgeface.ray.Embedder`` runs ``Model.embed`` inside Ray Data's ``map_batches``.

Weights are never bundled: ``Model()`` reads ``weights=PATH``, else ``$BRIDGE_WEIGHTS``, else
``weights/student.safetensors`` in the current folder, else the one in the bridgeface clone the
package was built from (see docs/PYTHON.md).
"""

from __future__ import annotations

import json
import os
from typing import Optional, Union

import numpy as np

from ._native import BridgefaceError, Gallery, Model, Teacher, __version__

__all__ = [
    "BridgefaceError",
    "Gallery",
    "Model",
    "Teacher",
    "gallery_from_parquet",
    "__version__",
]


def gallery_from_parquet(
    path: Union[str, os.PathLike],
    model: Optional[Union[Model, Teacher]] = None,
    embedding_column: str = "embedding",
    label_column: str = "label",
    path_column: str = "path",
) -> Gallery:
    """A gallery from Parquet files written by ``bridgeface.ray.Embedder`` (or any table with a
    fixed-size float embedding column, a label column and optionally a path column).

    ``path`` is a Parquet file or a folder of them (Ray's ``write_parquet`` output). Rows are
    added in file-name order, then row order. When the table has Embedder's ``model`` column and
    ``model`` is given, the two must name the same weights (``bridge gallery build
    --from-parquet`` reads the same columns and tags the gallery with that column).
    """
    import pyarrow.parquet as pq

    try:  # Ray's tensor columns are an Arrow extension type: register it when Ray is there.
        import ray.data  # noqa: F401
    except ImportError:
        pass
    p = os.fspath(path)
    files = (
        sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".parquet"))
        if os.path.isdir(p)
        else [p]
    )
    if not files:
        raise BridgefaceError(f"nothing to do: {p} holds no .parquet files")
    gallery: Optional[Gallery] = None
    for f in files:
        table = pq.read_table(f)
        for col in (embedding_column, label_column):
            if col not in table.column_names:
                raise BridgefaceError(
                    f"invalid argument: {f} has no column `{col}` (columns: {table.column_names})"
                )
        emb = _embedding_matrix(table.column(embedding_column))
        if len(emb) == 0:
            continue
        if model is not None and "model" in table.column_names:
            made_by = [json.loads(t) for t in set(table.column("model").to_pylist()) if t]
            if any(t != model.tag for t in made_by):
                raise BridgefaceError(
                    f"invalid argument: {f} was embedded by {made_by}, not by the given model "
                    f"{model.tag}; pass the same weights"
                )
        labels = [str(x) for x in table.column(label_column).to_pylist()]
        paths = (
            [str(x) for x in table.column(path_column).to_pylist()]
            if path_column in table.column_names
            else None
        )
        if gallery is None:
            gallery = Gallery(dimensions=emb.shape[1], model=model)
        gallery.add(emb, labels, paths)
    if gallery is None:
        raise BridgefaceError(f"nothing to do: the Parquet files under {p} hold no rows")
    return gallery


def _embedding_matrix(column) -> np.ndarray:
    """An Arrow column of fixed-size float lists (or Ray tensors) as float32 N x D."""
    chunks = []
    for chunk in column.chunks:
        if hasattr(chunk, "to_numpy_ndarray"):  # Ray's ArrowTensorArray
            chunks.append(np.asarray(chunk.to_numpy_ndarray(), dtype=np.float32))
        else:
            chunks.append(np.asarray(chunk.to_pylist(), dtype=np.float32))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    m = np.concatenate(chunks)
    if m.ndim != 2:
        raise BridgefaceError(
            f"invalid argument: the embedding column holds arrays of shape {m.shape[1:]}, expected (D,)"
        )
    return np.ascontiguousarray(m, dtype=np.float32)
