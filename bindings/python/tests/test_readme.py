"""The README's "From Python" example runs as written on a generated ImageFolder of PNGs, and
finds the probe's own identity first."""

import os
import re
import subprocess
import sys

import numpy as np

from conftest import REPO, synthetic_image, write_png


def test_readme_example_runs(tmp_path, weights):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 10, "the README promises a ten-line example"
    for ident in range(4):
        d = tmp_path / "faces" / f"person{ident}"
        d.mkdir(parents=True)
        for k in range(3):
            write_png(d / f"{k}.png", synthetic_image(50 + ident, size=48))
    write_png(tmp_path / "probe.png", synthetic_image(52, size=48))  # person2's pattern
    env = dict(os.environ, BRIDGE_WEIGHTS=weights)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0].startswith("person2 "), out.stdout
    assert (tmp_path / "faces.gallery" / "index.usearch").exists()
    assert np.isclose(float(lines[0].split()[1]), 1.0, atol=2e-3)
