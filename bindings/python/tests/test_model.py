"""Model.embed/verify against the `bridge` CLI, the GIL released while embedding, and bad input
raising BridgefaceError with the CLI's message (never a crash)."""

import json
import threading
import time

import numpy as np
import pytest

import bridgeface
from conftest import run_cli, synthetic_image, write_ppm


@pytest.fixture(scope="module")
def model(weights):
    return bridgeface.Model(weights=weights)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    arrays = [synthetic_image(s, size=40) for s in range(7)]
    paths = []
    for i, a in enumerate(arrays):
        p = root / f"img{i}.ppm"
        write_ppm(p, a)
        paths.append(str(p))
    return arrays, paths


def test_embed_equals_cli_json(model, images, weights, bridge_bin):
    arrays, paths = images
    out = run_cli(bridge_bin, "embed", *paths, "--weights", weights, "--json")
    assert out.returncode == 0, out.stderr
    cli = np.array([item["embedding"] for item in json.loads(out.stdout)], dtype=np.float32)
    from_paths = model.embed(paths)
    assert from_paths.dtype == np.float32 and from_paths.shape == (len(paths), 128)
    np.testing.assert_allclose(from_paths, cli, rtol=0, atol=1e-6)
    # The same pixels as an N x H x W x 3 array, and as encoded bytes, give the same rows.
    np.testing.assert_allclose(model.embed(np.stack(arrays)), cli, rtol=0, atol=1e-6)
    blobs = [open(p, "rb").read() for p in paths]
    np.testing.assert_allclose(model.embed(blobs), cli, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(cli, axis=1), 1.0, atol=1e-5)


def test_verify_equals_cli(model, images, weights, bridge_bin):
    _, paths = images
    out = run_cli(bridge_bin, "verify", paths[0], paths[1], "--weights", weights, "--json")
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    sim, same = model.verify(paths[0], paths[1])
    assert abs(sim - cli["cosine"]) <= 1e-6
    assert same == cli["same"]
    sim_self, same_self = model.verify(paths[2], paths[2])
    assert sim_self == pytest.approx(1.0, abs=1e-5) and same_self


def test_embed_releases_the_gil(weights):
    model = bridgeface.Model(weights=weights, threads=1)
    batch = np.stack([synthetic_image(s, size=96) for s in range(8)] * 64)  # 512 faces
    t0 = time.perf_counter()
    model.embed(batch[:64])
    per_64 = time.perf_counter() - t0
    count = 0
    stop = threading.Event()

    def spin():
        nonlocal count
        while not stop.is_set():
            count += 1

    th = threading.Thread(target=spin)
    th.start()
    time.sleep(0.05)
    before = count
    t0 = time.perf_counter()
    model.embed(batch)
    elapsed = time.perf_counter() - t0
    during = count - before
    stop.set()
    th.join()
    # Holding the GIL for the whole call would leave the spinning thread a few switch intervals
    # (5 ms each) at most; released, it loops freely for the whole call.
    assert elapsed > 4 * per_64 * 0.5, "the batch ran implausibly fast; the test measures nothing"
    assert during > 10_000, f"the other thread ran {during} loops in {elapsed:.2f} s of embed"


@pytest.mark.parametrize(
    "bad, message",
    [
        (["/no/such/file.png"], "cannot access /no/such/file.png"),
        ([b"not an image"], "cannot read image <bytes item 0>"),
        ([], "nothing to do: no images given"),
        (np.zeros((2, 16, 16, 4), np.uint8), "uint8 NumPy array N×H×W×3"),
        (np.zeros((2, 16, 16, 3), np.float32), "got a float32 array"),
        (np.zeros((0, 16, 16, 3), np.uint8), "nothing to do"),
        (np.zeros((1, 0, 16, 3), np.uint8), "is empty"),
        ("one_path.png", "wrap one image in a list"),
        ([3.5], "item 0 is a float"),
        (42, "got a int"),
    ],
)
def test_bad_images_raise(model, bad, message):
    with pytest.raises(bridgeface.BridgefaceError) as e:
        model.embed(bad)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_models_raise(tmp_path, weights, bridge_bin):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    cases = [
        (dict(weights=str(tmp_path / "absent.safetensors")), "cannot access"),
        (dict(weights=str(corrupt)), "is not a valid safetensors weight file"),
        (dict(weights=weights, threads=0), "threads must be at least 1"),
        (dict(weights=weights, device="cuda:0"), "CPU only"),
    ]
    for kwargs, message in cases:
        with pytest.raises(bridgeface.BridgefaceError) as e:
            bridgeface.Model(**kwargs)
        assert message in str(e.value), str(e.value)
    # The same one-line message as the CLI's, minus its `error: ` prefix.
    img = tmp_path / "x.ppm"
    write_ppm(img, synthetic_image(0))
    out = run_cli(bridge_bin, "embed", img, "--weights", corrupt)
    with pytest.raises(bridgeface.BridgefaceError) as e:
        bridgeface.Model(weights=str(corrupt))
    assert out.returncode == 1 and out.stderr.strip() == f"error: {e.value}"


def test_default_weights_follow_bridge_weights(monkeypatch, weights, tmp_path):
    monkeypatch.setenv("BRIDGE_WEIGHTS", weights)
    assert bridgeface.Model().weights == weights
    monkeypatch.setenv("BRIDGE_WEIGHTS", str(tmp_path / "missing.safetensors"))
    with pytest.raises(bridgeface.BridgefaceError, match="cannot access"):
        bridgeface.Model()
