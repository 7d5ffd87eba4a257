"""The gallery's scale benchmark (BENCHMARKS.md, "Gallery"), through the Python package (the
same Rust gallery and usearch index as `bridge gallery`).

Synthetic 128-D face-like vectors (`--data clustered`, the default): identities of 10 noisy
copies of a random unit centre (noise 0.09 per coordinate, so two images of one identity have
cosine ~0.5, like real face embeddings of one person); queries are fresh noisy copies of random
identities. `--data uniform`: independent uniform points on the unit sphere, queries likewise, a
harder case than faces (no clusters: the nearest neighbour is barely nearer than the 100th).
It measures; it asserts nothing.

    python gallery_scale.py build N DIR [--threads 2] [--data D]     # build time, bytes on disk
    python gallery_scale.py query N DIR [--queries 1000] [--data D]  # view RSS, p50/p99, recall@1

The phases run as two processes so that `query` measures the resident memory of a view in a
process that never held the index in memory. Recall@1 is against exact brute force in f32 over
the original (unquantised) vectors.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import bridgeface

D, PER_ID, SIGMA, SEED = 128, 10, 0.09, 2026
CHUNK = 20_000


def rss(field: str = "VmRSS") -> int:
    """Resident bytes of this process now (VmRSS), or at its peak (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


UNIFORM = False  # set by --data uniform


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def centres(n: int) -> np.ndarray:
    if UNIFORM:
        return np.zeros((0, D), np.float32)
    return unit(np.random.default_rng(SEED).standard_normal((-(-n // PER_ID), D)))


def vectors(c: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows start..stop, each seeded by its chunk, so chunks regenerate identically."""
    out = []
    for s in range(start, stop, CHUNK):
        e = min(s + CHUNK, stop)
        noise = np.random.default_rng([SEED, s]).standard_normal((e - s, D))
        out.append(unit(noise) if UNIFORM else unit(c[np.arange(s, e) // PER_ID] + noise * SIGMA))
    return np.concatenate(out)


def progress(done: int, total: int, t0: float, what: str) -> None:
    el = time.perf_counter() - t0
    rate = done / el if el > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else 0.0
    print(f"\r{what} {done}/{total} {rate:,.0f}/s eta {eta:,.0f} s", end="", file=sys.stderr, flush=True)


def build(n: int, out: str, threads: int) -> dict:
    c = centres(n)
    g = bridgeface.Gallery(dimensions=D)
    t0 = time.perf_counter()
    for s in range(0, n, CHUNK):
        e = min(s + CHUNK, n)
        v = vectors(c, s, e)
        # The path field holds the row number, so the query phase can score keys, not labels.
        ids = range(s, e)
        g.add(v, [f"id{i // PER_ID}" for i in ids], [str(i) for i in ids], threads=threads)
        progress(e, n, t0, "add")
    print(file=sys.stderr)
    build_s = time.perf_counter() - t0  # includes generating the vectors (~1% of it)
    t1 = time.perf_counter()
    g.save(out)
    save_s = time.perf_counter() - t1
    size = {f: os.path.getsize(os.path.join(out, f)) for f in ("index.usearch", "gallery.json")}
    return {"phase": "build", "vectors": n, "threads": threads, "build_s": round(build_s, 2),
            "adds_per_sec": round(n / build_s), "save_s": round(save_s, 2),
            "index_bytes": size["index.usearch"], "labels_bytes": size["gallery.json"],
            "peak_rss_bytes": rss("VmHWM"), "data": "uniform" if UNIFORM else "clustered"}


def query(n: int, path: str, queries: int) -> dict:
    rss0 = rss()
    t0 = time.perf_counter()
    g = bridgeface.Gallery.load(path, view=True)
    view_s = time.perf_counter() - t0
    rss_view = rss()
    c = centres(n)
    r = np.random.default_rng(SEED + 1)
    if UNIFORM:
        q = unit(r.standard_normal((queries, D)))
    else:
        q = unit(c[r.integers(0, len(c), queries)] + r.standard_normal((queries, D)) * SIGMA)
    rss_data = rss()
    lat, cpu, approx = [], [], []
    t0 = time.perf_counter()
    for i in range(queries):
        t, cpu0 = time.perf_counter(), time.thread_time()
        m = g.search(q[i], k=1)
        # The search runs on this thread: its CPU time is the query's cost whatever the load,
        # where the wall clock also counts the time other processes held the cores.
        cpu.append((time.thread_time() - cpu0) * 1e3)
        lat.append((time.perf_counter() - t) * 1e3)
        approx.append(int(m[0][2]))
        if i % 100 == 99:
            progress(i + 1, queries, t0, "search")
    print(file=sys.stderr)
    rss_queried = rss()
    # Exact top-1 by brute force in f32, chunk by chunk over the regenerated originals.
    best = np.full(queries, -np.inf, np.float32)
    arg = np.zeros(queries, np.int64)
    t0 = time.perf_counter()
    for s in range(0, n, CHUNK * 5):
        e = min(s + CHUNK * 5, n)
        sims = q @ vectors(c, s, e).T
        j = sims.argmax(axis=1)
        v = sims[np.arange(queries), j]
        better = v > best
        best[better], arg[better] = v[better], j[better] + s
    exact_s = time.perf_counter() - t0
    return {"phase": "query", "vectors": n, "queries": queries, "view_s": round(view_s, 3),
            "rss_before_view_bytes": rss0, "rss_after_view_bytes": rss_view,
            "rss_after_queries_bytes": rss_queried,
            "rss_touched_by_queries_bytes": rss_queried - rss_data,
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 3),
            "cpu_ms_p50": round(float(np.percentile(cpu, 50)), 3),
            "cpu_ms_p99": round(float(np.percentile(cpu, 99)), 3),
            "recall_at_1": float(np.mean(np.array(approx) == arg)), "exact_s": round(exact_s, 1),
            "data": "uniform" if UNIFORM else "clustered"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["build", "query"])
    p.add_argument("n", type=int)
    p.add_argument("dir")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    a = p.parse_args()
    global UNIFORM
    UNIFORM = a.data == "uniform"
    if a.phase == "build":
        print(json.dumps(build(a.n, a.dir, a.threads)))
        return
    r = query(a.n, a.dir, a.queries)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
