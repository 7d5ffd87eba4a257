//! The `bridge` binary end to end on generated PNG and JPEG files, and every bad-input case:
//! each must give one line on stderr starting with `error:`, exit code 1, and no panic.

use bridgeface::data::synthetic::synthetic_face;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

type Named = Vec<(String, bridgeface::Tensor)>;

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .env_remove("BRIDGE_WEIGHTS")
        .env_remove("BRIDGE_ISA")
        .env_remove("BRIDGE_LOG")
        .output()
        .expect("run bridge")
}

thread_local! {
    // One folder per test (each test runs on its own thread), removed when the test ends.
    static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
}

fn dir() -> PathBuf {
    DIR.with(|d| d.path().to_path_buf())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write_face(path: &Path, seed: u64, jitter: i32) {
    let f = synthetic_face(seed, jitter, 0.0);
    image::RgbImage::from_raw(f.width as u32, f.height as u32, f.pixels)
        .unwrap()
        .save(path)
        .unwrap();
}

fn student(name: &str) -> PathBuf {
    let w = dir().join(name);
    let out = bridge(&["init", "--out", p(&w), "--seed", "3", "--resolution", "16"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w
}

/// Asserts a clean failure and returns its message.
fn clean_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn init_and_info_report_parameters_sizes_and_metadata() {
    let w = student("info.safetensors");
    let out = bridge(&["info", p(&w)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("parameters:"))
        .expect("parameters line");
    let count: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((190_000..=230_000).contains(&count), "{line}");
    assert!(text.contains(&format!("bytes at f32: {}", count * 4)));
    assert!(text.contains(&format!("bytes at f16: {}", count * 2)));
    for key in [
        "architecture: BridgeNet",
        "input_resolution: 16",
        "embedding_size: 128",
        "input_normalization:",
        "provenance:",
    ] {
        assert!(text.contains(key), "missing `{key}` in\n{text}");
    }
    assert!(text.contains("b7.pw.conv.weight"));
}

#[test]
fn embed_and_verify_work_on_png_and_jpeg() {
    let w = student("ev.safetensors");
    let d = dir();
    let (png, jpg, other) = (d.join("a.png"), d.join("a.jpg"), d.join("b.png"));
    write_face(&png, 1, 0);
    write_face(&jpg, 1, 0);
    write_face(&other, 2, 0);

    let out = bridge(&["embed", p(&png), p(&jpg), "--weights", p(&w), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        let e: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 128);
        let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }

    let out = bridge(&["embed", p(&png), "--weights", p(&w)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(p(&png)) && text.split_whitespace().count() == 129,
        "{text}"
    );

    // The same picture as PNG and as JPEG: nearly identical embeddings, called "same".
    let out = bridge(&["verify", p(&png), p(&jpg), "--weights", p(&w), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["cosine"].as_f64().unwrap() > 0.99, "{v}");
    assert_eq!(v["same"], true);
    // An explicit threshold above any cosine makes it "different".
    let out = bridge(&[
        "verify",
        p(&png),
        p(&other),
        "--weights",
        p(&w),
        "--threshold",
        "1.01",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim_end().ends_with("different"),
        "{text}"
    );
}

/// The main job on any student file: it fetches and aligns ORL, then prints the table (the
/// teacher at 112 recognises ORL almost perfectly; the student row is whatever the weights give)
/// and the speed line.
#[test]
fn demo_prints_the_orl_table_and_speed() {
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .arg("demo")
        .current_dir(dir())
        .env("BRIDGE_WEIGHTS", p(&student("demo.safetensors")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = |label: &str| -> Vec<f64> {
        let line = text
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no `{label}` row in:\n{text}"));
        line.split('|')
            .filter_map(|c| c.trim().strip_suffix('%'))
            .map(|v| v.trim().parse().unwrap())
            .collect()
    };
    let teacher = row("teacher SFace (112×112)");
    assert!(teacher[0] >= 99.0 && teacher[1] >= 99.0, "{text}");
    let lr = row("teacher SFace (16×16");
    let student = row("student BridgeNet (16×16)");
    assert_eq!((lr.len(), student.len()), (2, 2), "{text}");
    assert!(lr[0] < teacher[0], "{text}");
    assert!(text.contains("faces/s on 1 thread"), "{text}");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let d = dir();
    let w = student("bad.safetensors");
    let img = d.join("ok.png");
    write_face(&img, 5, 0);

    // Truncated weights.
    let bytes = std::fs::read(&w).unwrap();
    let trunc = d.join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let e = clean_error(&bridge(&["embed", p(&img), "--weights", p(&trunc)]));
    assert!(e.contains("not a valid safetensors"), "{e}");
    clean_error(&bridge(&["info", p(&trunc)]));

    // Corrupt header.
    let mut corrupt = bytes.clone();
    corrupt[12] = 0xff;
    let cpath = d.join("corrupt.safetensors");
    std::fs::write(&cpath, &corrupt).unwrap();
    clean_error(&bridge(&[
        "verify",
        p(&img),
        p(&img),
        "--weights",
        p(&cpath),
    ]));

    // Wrong shape, missing tensor, wrong dtype: rewrite the student with one tensor altered.
    let wf = bridgeface::weights::WeightFile::open(&w).unwrap();
    let meta = wf.metadata().clone();
    let tensors: Named = wf
        .entries()
        .map(|e| (e.name.clone(), wf.tensor(&e.name, &e.shape).unwrap()))
        .collect();
    let variant = |name: &str, f: &dyn Fn(&mut Named), dtype| {
        let mut ts = tensors.clone();
        f(&mut ts);
        let named: Vec<(String, &bridgeface::Tensor)> =
            ts.iter().map(|(n, t)| (n.clone(), t)).collect();
        let path = d.join(name);
        bridgeface::weights::save(&path, &named, &meta, dtype).unwrap();
        path
    };
    let f32s = bridgeface::weights::StoreDtype::F32;
    let shape = variant(
        "shape.safetensors",
        &|ts| {
            let t = ts
                .iter_mut()
                .find(|(n, _)| n == "b2.pw.conv.weight")
                .unwrap();
            t.1 = bridgeface::Tensor::zeros(&[64, 32, 1, 1]);
        },
        f32s,
    );
    let e = clean_error(&bridge(&["embed", p(&img), "--weights", p(&shape)]));
    assert!(
        e.contains("b2.pw.conv.weight") && e.contains("shape"),
        "{e}"
    );
    let missing = variant(
        "missing.safetensors",
        &|ts| ts.retain(|(n, _)| n != "head.linear.weight"),
        f32s,
    );
    let e = clean_error(&bridge(&["embed", p(&img), "--weights", p(&missing)]));
    assert!(e.contains("head.linear.weight"), "{e}");
    // A dtype we cannot use: an I32 file.
    let ints = [1i32, 2];
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::I32,
        vec![2],
        bytemuck::cast_slice(&ints),
    )
    .unwrap();
    let mut m = std::collections::HashMap::new();
    for (k, v) in &meta {
        m.insert(k.clone(), v.clone());
    }
    let dpath = d.join("dtype.safetensors");
    std::fs::write(
        &dpath,
        safetensors::serialize([("stem.conv.weight", view)], Some(m)).unwrap(),
    )
    .unwrap();
    let e = clean_error(&bridge(&["embed", p(&img), "--weights", p(&dpath)]));
    assert!(e.contains("dtype") || e.contains("shape"), "{e}");

    // Not an image, unreadable path, empty input list, missing default weights.
    let e = clean_error(&bridge(&["embed", p(&w), "--weights", p(&w)]));
    assert!(e.contains("cannot read image"), "{e}");
    let e = clean_error(&bridge(&[
        "embed",
        p(&d.join("nope.png")),
        "--weights",
        p(&w),
    ]));
    assert!(e.contains("nope.png"), "{e}");
    let e = clean_error(&bridge(&["embed", "--weights", p(&w)]));
    assert!(e.contains("nothing to do"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["embed", p(&img)])
        .current_dir(&d)
        .env_remove("BRIDGE_WEIGHTS")
        .output()
        .unwrap();
    if !std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/weights/student.safetensors"
    ))
    .exists()
    {
        let e = clean_error(&out);
        assert!(e.contains("bridge init"), "{e}");
    }
    // Bad arguments to init.
    clean_error(&bridge(&[
        "init",
        "--out",
        p(&d.join("x.safetensors")),
        "--resolution",
        "40",
    ]));
    clean_error(&bridge(&[
        "init",
        "--out",
        p(&d.join("no/dir/x.safetensors")),
    ]));
    // An unknown ISA.
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["embed", p(&img), "--weights", p(&w)])
        .env("BRIDGE_ISA", "sse9")
        .output()
        .unwrap();
    let e = clean_error(&out);
    assert!(e.contains("sse9"), "{e}");
}

#[test]
fn chosen_isa_is_logged_once_when_bridge_log_is_info() {
    let w = student("log.safetensors");
    let img = dir().join("log.png");
    write_face(&img, 4, 0);
    let run = |log: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bridge"));
        c.args(["embed", p(&img), "--weights", p(&w)])
            .env_remove("BRIDGE_WEIGHTS")
            .env("BRIDGE_ISA", "scalar");
        match log {
            Some(v) => c.env("BRIDGE_LOG", v),
            None => c.env_remove("BRIDGE_LOG"),
        };
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        err
    };
    let err = run(Some("info"));
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("CPU kernels")).collect();
    assert_eq!(
        lines,
        ["bridgeface: info: CPU kernels: scalar (BRIDGE_ISA=scalar)"],
        "{err}"
    );
    for quiet in [None, Some("off")] {
        let err = run(quiet);
        assert!(!err.contains("info:"), "{quiet:?}: {err}");
    }
}
