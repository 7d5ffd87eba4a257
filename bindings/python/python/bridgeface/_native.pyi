"""Type stubs of bridgeface's native module (PyO3)."""

import os
from typing import List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, os.PathLike]
ImageInput = Union[PathLike, bytes, npt.NDArray[np.uint8]]
ImagesInput = Union[npt.NDArray[np.uint8], Sequence[ImageInput]]

class ModelTag(TypedDict):
    kind: str
    weights_sha256: str
    resolution: int

class BridgefaceError(Exception):
    """A bridgeface failure; the message is the CLI's one-line error, without ``error: ``."""

class Model:
    """The BridgeNet student on bridgeface's CPU kernels.

    ``weights``: a student .safetensors (default: ``$BRIDGE_WEIGHTS``, else
    ``weights/student.safetensors`` in the current folder, else in the clone the package was
    built from). ``device``: only ``"cpu"`` in the Python package. ``threads``: CPU threads per
    ``embed`` call (default: all CPUs).
    """

    def __init__(
        self,
        weights: Optional[PathLike] = None,
        device: str = "cpu",
        threads: Optional[int] = None,
    ) -> None: ...
    def embed(self, images: ImagesInput) -> npt.NDArray[np.float32]:
        """Float32 N x 128 L2-normalised embeddings; the GIL is released while it runs.

        ``images``: uint8 N x H x W x 3 (RGB), or a list of paths, encoded bytes or H x W x 3
        arrays; each is resized to the model's input by area averaging, as ``bridge embed``.
        """
    def verify(
        self, a: ImageInput, b: ImageInput, threshold: Optional[float] = None
    ) -> Tuple[float, bool]:
        """(cosine similarity, same person); ``threshold`` defaults to the model's own."""
    def detect_and_align(
        self,
        image: ImageInput,
        size: int = 112,
        score: float = 0.5,
        detector: Optional[PathLike] = None,
    ) -> List[Tuple[npt.NDArray[np.uint8], Tuple[float, float, float, float], float]]:
        """Every face YuNet finds, best first: (aligned uint8 size x size x 3 chip,
        box (x, y, w, h) in image pixels, score). Needs the fetched YuNet (``bridge fetch``)
        or ``detector=PATH``."""
    @property
    def resolution(self) -> int: ...
    @property
    def threshold(self) -> float: ...
    @property
    def weights(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def tag(self) -> ModelTag: ...

class Teacher:
    """The SFace teacher (112 x 112): ``weights`` an .onnx or imported .safetensors graph
    (default: the fetched SFace, ``bridge fetch``)."""

    def __init__(self, weights: Optional[PathLike] = None) -> None: ...
    def embed(self, images: ImagesInput) -> npt.NDArray[np.float32]: ...
    def verify(
        self, a: ImageInput, b: ImageInput, threshold: Optional[float] = None
    ) -> Tuple[float, bool]: ...
    @property
    def tag(self) -> ModelTag: ...

Match = Tuple[str, float, str]

class Gallery:
    """A persistent, searchable set of labelled embeddings: usearch HNSW, cosine, f16 storage,
    saved as a folder (index.usearch + gallery.json; docs/PYTHON.md)."""

    def __init__(
        self,
        dimensions: int = 128,
        model: Optional[Union[Model, Teacher]] = None,
        connectivity: Optional[int] = None,
        expansion_add: Optional[int] = None,
        expansion_search: Optional[int] = None,
    ) -> None: ...
    @staticmethod
    def build(
        model: Union[Model, Teacher], folder: PathLike, threads: Optional[int] = None
    ) -> "Gallery":
        """Every image of FOLDER/IDENTITY/IMAGE, embedded by ``model``, labelled by folder."""
    def add(
        self,
        embeddings: npt.NDArray[np.float32],
        labels: Union[str, Sequence[str]],
        paths: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
    ) -> None: ...
    def search(
        self, queries: npt.NDArray[np.float32], k: int = 5
    ) -> Union[List[Match], List[List[Match]]]:
        """The ``k`` nearest entries, most similar first, as (label, similarity, path): a list
        for a 1-D query, a list of lists for an N x D matrix."""
    def save(self, path: PathLike) -> None: ...
    @staticmethod
    def load(path: PathLike, view: bool = False) -> "Gallery": ...
    def __len__(self) -> int: ...
    @property
    def dimensions(self) -> int: ...
    @property
    def labels(self) -> List[str]: ...
    @property
    def paths(self) -> List[str]: ...
    @property
    def model(self) -> ModelTag: ...
