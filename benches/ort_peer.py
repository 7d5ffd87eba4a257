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


def prepare(path):
    """With the `onnx` package: drops initializers listed as graph inputs (old exporters, such
    as SFace's, list them; onnxruntime then treats them as overridable and skips constant
    folding, e.g. of BatchNorm into Conv) and frees the batch dimension of the inputs and
    outputs. Returns (model path or bytes, whether it was prepared)."""
    try:
        import onnx
    except ImportError:
        return path, False
    m = onnx.load(path)
    inits = {i.name for i in m.graph.initializer}
    keep = [i for i in m.graph.input if i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    return m.SerializeToString(), True


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
    model, prepared = prepare(a.model)
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
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
                      "calls_per_batch": len(parts), "prepared": prepared}))


if __name__ == "__main__":
    main()
