#!/usr/bin/env python3
"""onnxruntime peer for bridge-bench: faces/s of an ONNX model at a given batch and thread count.

Prints one JSON object: {"faces_per_sec": median, "batch": B, "threads": T, "runs": N}.
Same protocol as bridge-bench: one warm-up run, then the median of N timed runs.
"""
import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--resolution", type=int, default=16)
    a = p.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    # A model whose batch dimension is baked in (SFace's ONNX file says 1) cannot take the
    # whole batch at once: each timed run then makes batch/fixed calls, as a user would.
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else a.batch
    if a.batch % fixed != 0:
        raise SystemExit(f"the model takes batches of {fixed}; {a.batch} is not a multiple")
    rng = np.random.default_rng(42)
    x = rng.uniform(-1, 1, (a.batch, 3, a.resolution, a.resolution)).astype(np.float32)
    parts = [x[i:i + fixed] for i in range(0, a.batch, fixed)]

    def run():
        for p in parts:
            sess.run(None, {inp.name: p})

    run()
    times = []
    for _ in range(a.runs):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({"faces_per_sec": a.batch / med, "batch": a.batch,
                      "threads": a.threads, "runs": a.runs,
                      "calls_per_batch": len(parts)}))


if __name__ == "__main__":
    main()
