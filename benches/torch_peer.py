#!/usr/bin/env python3
"""PyTorch peer for `bridge-bench --device cuda`: the same BridgeNet student, built as a torch
module from a bridge .safetensors file (BN folded, as bridgeface does), run with cuDNN in fp16
and channels_last, timed with CUDA events (median over runs) at the same batch sizes.

Needs only torch (no numpy, no safetensors package). Usage:
    python3 benches/torch_peer.py --weights student.safetensors [--runs 20] [--compile]
"""
import argparse
import json
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

# (name, c_in, c_out, stride, residual): the BLOCKS table of src/model/student.rs.
BLOCKS = [
    ("b1", 32, 64, 1, False),
    ("b2", 64, 64, 2, False),
    ("b3", 64, 128, 1, False),
    ("b4", 128, 128, 2, False),
    ("b5", 128, 128, 1, True),
    ("b6", 128, 256, 1, False),
    ("b7", 256, 256, 1, True),
]
BN_EPS = 1e-5
BATCHES = [1, 256, 4096, 65536]


def load_safetensors(path):
    """Reads a safetensors file (F32 or F16) into float32 CPU tensors, plus its metadata."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        dt = {"F32": torch.float32, "F16": torch.float16}[e["dtype"]]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=dt).reshape(e["shape"])
        out[name] = t.float()
    return out, meta


def fold(w, p, prefix):
    """BN folded into the preceding conv/linear, exactly as cpu::scalar::fold_batch_norm."""
    scale = p[f"{prefix}.weight"] / torch.sqrt(p[f"{prefix}.running_var"] + BN_EPS)
    shape = [-1] + [1] * (w.dim() - 1)
    return w * scale.reshape(shape), p[f"{prefix}.bias"] - p[f"{prefix}.running_mean"] * scale


class Student(nn.Module):
    def __init__(self, p, side):
        super().__init__()

        def conv(prefix, stride, pad, groups, prelu):
            w, b = fold(p[f"{prefix}.conv.weight"], p, f"{prefix}.bn")
            c = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2], stride, pad, groups=groups)
            c.weight.data.copy_(w)
            c.bias.data.copy_(b)
            if not prelu:
                return c
            act = nn.PReLU(w.shape[0])
            act.weight.data.copy_(p[f"{prefix}.prelu.weight"])
            return nn.Sequential(c, act)

        self.stem = conv("stem", 1, 1, 1, True)
        self.blocks = nn.ModuleList()
        self.residual = []
        for name, cin, cout, stride, res in BLOCKS:
            self.blocks.append(
                nn.Sequential(conv(f"{name}.dw", stride, 1, cin, True), conv(f"{name}.pw", 1, 0, 1, True))
            )
            self.residual.append(res)
        self.gdc = conv("head.gdc", 1, 0, 256, False)
        w, b = fold(p["head.linear.weight"], p, "head.bn")
        self.linear = nn.Linear(256, 128)
        self.linear.weight.data.copy_(w)
        self.linear.bias.data.copy_(b)

    def forward(self, x):
        y = self.stem(x)
        for blk, res in zip(self.blocks, self.residual):
            out = blk(y)
            y = out + y if res else out
        y = self.gdc(y).flatten(1)
        return F.normalize(self.linear(y), dim=1, eps=1e-12)


def read_ppm(path):
    """A binary P6 image as a [1, 3, h, w] float tensor of 0..255 values."""
    raw = open(path, "rb").read()
    parts = raw.split(maxsplit=4)
    assert parts[0] == b"P6" and parts[3] == b"255", "only 8-bit P6 images"
    w, h = int(parts[1]), int(parts[2])
    px = torch.frombuffer(bytearray(parts[4][: w * h * 3]), dtype=torch.uint8)
    return px.reshape(h, w, 3).permute(2, 0, 1).unsqueeze(0).float()


def check_against_bridge(model, meta, image, embedding_json, device):
    """The peer must compute bridgeface's function: same image (already r×r, so bridge's area
    resize is the identity), same normalisation, fp32 → same embedding within 1e-5."""
    norm = json.loads(meta["input_normalization"])
    mean = torch.tensor(norm["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(norm["std"]).reshape(1, 3, 1, 1)
    x = ((read_ppm(image) - mean) / std).to(device)
    got = model(x)[0].cpu()
    want = torch.tensor(json.load(open(embedding_json))[0]["embedding"])
    err = ((got - want).abs().max() / want.abs().max()).item()
    print(f"torch fp32 vs bridge embed relative error {err:.3e} (bound 1e-5)")
    if err > 1e-5:
        raise SystemExit("the torch peer does not compute the same network as bridgeface")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--check-image", help="an r×r binary PPM that `bridge embed` embedded")
    ap.add_argument("--check-embedding", help="`bridge embed --json` output for --check-image")
    ap.add_argument("--check-only", action="store_true", help="check on the CPU, time nothing")
    args = ap.parse_args()
    p, meta = load_safetensors(args.weights)
    r = int(meta.get("input_resolution", 16))
    if args.check_image:
        with torch.inference_mode():
            check_against_bridge(Student(p, r).eval(), meta, args.check_image, args.check_embedding, "cpu")
    if args.check_only:
        return
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    ref = Student(p, r).eval().to(dev)
    fast = Student(p, r).eval().to(dev).half().to(memory_format=torch.channels_last)
    print(f"torch {torch.__version__} cudnn {torch.backends.cudnn.version()} on {torch.cuda.get_device_name(0)}")
    with torch.inference_mode():
        x = torch.randn(64, 3, r, r, device=dev)
        e32 = ref(x)
        e16 = fast(x.half().contiguous(memory_format=torch.channels_last)).float()
        err = ((e16 - e32).abs().max() / e32.abs().max()).item()
        print(f"torch fp16 vs fp32 embedding relative error {err:.3e}")
        variants = [("eager", fast)]
        if args.compile:
            variants.append(("compiled", torch.compile(fast, mode="max-autotune")))
        for tag, model in variants:
            for batch in BATCHES:
                x = torch.randn(batch, 3, r, r, device=dev).half().contiguous(memory_format=torch.channels_last)
                for _ in range(3):
                    model(x)
                torch.cuda.synchronize()
                times = []
                for _ in range(args.runs):
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    model(x)
                    e.record()
                    e.synchronize()
                    times.append(s.elapsed_time(e))
                times.sort()
                ms = times[len(times) // 2]
                print(
                    f"torch student {r}x{r} {tag} fp16 channels_last batch={batch}: "
                    f"{batch / (ms / 1e3):.0f} faces/s (median {ms:.4f} ms; {args.runs} runs)"
                )


if __name__ == "__main__":
    main()
