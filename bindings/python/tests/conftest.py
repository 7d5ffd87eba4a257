"""Shared fixtures: generated face-like images (never real faces), the repo's weights and CLI."""

import os
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def write_ppm(path: pathlib.Path, rgb: np.ndarray) -> None:
    """A binary PPM (P6), which bridgeface decodes like any other format; no imaging library."""
    h, w, _ = rgb.shape
    path.write_bytes(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(rgb, np.uint8).tobytes())


def synthetic_image(seed: int, size: int = 40) -> np.ndarray:
    """A smooth random RGB pattern (gradients plus blobs), distinct per seed."""
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for c in range(3):
        a, b, p = r.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(6 * (a * x + b * y) + p)
        for _ in range(3):
            cx, cy, s = r.uniform(0.2, 0.8), r.uniform(0.2, 0.8), r.uniform(0.05, 0.2)
            img[..., c] += r.uniform(-80, 80) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / s**2)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def weights() -> str:
    w = os.environ.get("BRIDGE_WEIGHTS") or str(REPO / "weights" / "student.safetensors")
    assert os.path.exists(w), f"student weights not found at {w}"
    return w


@pytest.fixture(scope="session")
def bridge_bin() -> str:
    b = os.environ.get("BRIDGE_BIN") or str(REPO / "target" / "release" / "bridge")
    if not os.path.exists(b):
        b = shutil.which("bridge") or b
    assert os.path.exists(b), f"the bridge CLI was not found at {b}; build it or set BRIDGE_BIN"
    return b


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> pathlib.Path:
    """An ImageFolder: 6 identities x 4 images, each identity a seed pattern plus small noise."""
    root = tmp_path_factory.mktemp("faces")
    for ident in range(6):
        base = synthetic_image(1000 + ident).astype(np.int16)
        d = root / f"person{ident}"
        d.mkdir()
        r = np.random.default_rng(ident)
        for k in range(4):
            noisy = np.clip(base + r.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
            write_ppm(d / f"{k}.ppm", noisy)
    return root


def run_cli(bridge_bin, *args) -> subprocess.CompletedProcess:
    return subprocess.run([bridge_bin, *map(str, args)], capture_output=True, text=True)


def write_png(path: pathlib.Path, rgb: np.ndarray) -> None:
    """A minimal 8-bit RGB PNG (zlib, filter 0 per row), so tests need no imaging library."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + np.ascontiguousarray(rgb[y], np.uint8).tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
