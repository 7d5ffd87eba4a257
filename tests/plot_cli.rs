//! The pictures: `bridge eval --plot` with several models and the cross-resolution mode (PNG
//! size and content, SVG legend labels checked against the JSON numbers, JSON unchanged by
//! plotting), and `bridge plot` on training logs old and new, with clean errors on bad input.

use bridgeface::eval::plot::training::{PANEL_H, PANEL_W};
use bridgeface::eval::plot::{EvalFigure, PALETTE};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .output()
        .expect("the bridge binary runs")
}

fn ok(out: &Output) -> &Output {
    assert!(
        out.status.success(),
        "bridge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ids` identities with `per_id` generated faces each, as `root/person<k>/<v>.png`.
fn image_folder(root: &Path, ids: u64, per_id: i32) {
    for k in 0..ids {
        let dir = root.join(format!("person{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        for v in 0..per_id {
            let face =
                bridgeface::data::synthetic::synthetic_face(100 + k, v, 0.05 * (v + 1) as f32);
            image::RgbImage::from_raw(face.width as u32, face.height as u32, face.pixels)
                .unwrap()
                .save(dir.join(format!("{v}.png")))
                .unwrap();
        }
    }
}

fn student(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let path = dir.join(name);
    ok(&bridge(&[
        "init",
        "--out",
        path.to_str().unwrap(),
        "--seed",
        seed,
        "--resolution",
        "16",
    ]));
    path
}

/// The text content of every `<text>` element of an SVG, which must parse as XML.
fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

/// Checks a PNG: it decodes, has `size`, is not blank, and shows each of `colours` on enough
/// pixels to be a curve rather than a stray dot.
fn check_png(path: &Path, size: (u32, u32), colours: &[[u8; 3]]) {
    let img = image::open(path).expect("the plot is a PNG").to_rgb8();
    assert_eq!(img.dimensions(), size);
    let n = img.pixels().count();
    let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
    assert!(ink * 50 > n, "only {ink} of {n} pixels are not white");
    assert!(dark > 2000, "only {dark} dark pixels: no text or axes");
    for c in colours {
        let hits = img.pixels().filter(|p| p.0 == *c).count();
        assert!(hits > 300, "colour {c:?} covers only {hits} pixels");
    }
}

fn rgb(k: usize) -> [u8; 3] {
    let c = PALETTE[k];
    [c.0, c.1, c.2]
}

#[test]
fn eval_draws_several_models_with_a_legend_and_leaves_the_json_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("faces");
    image_folder(&data, 5, 4);
    let a = student(tmp.path(), "a.safetensors", "1");
    let b = student(tmp.path(), "b.safetensors", "2");
    let g = student(tmp.path(), "g.safetensors", "3");
    let base = |model: &Path| {
        vec![
            "eval".to_string(),
            "--data".into(),
            data.to_str().unwrap().into(),
            "--resolution".into(),
            "12".into(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--gallery-model".into(),
            g.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&bridge(&args)).clone()
    };
    let single_a = run(&base(&a));
    let single_b = run(&base(&b));

    // Two models, one figure: PNG.
    let png = tmp.path().join("both.png");
    let mut both = base(&a);
    both.extend(["--model".into(), b.to_str().unwrap().into()]);
    let mut with_png = both.clone();
    with_png.extend(["--plot".into(), png.to_str().unwrap().into()]);
    let out = run(&with_png);
    // Two models with their cross-resolution results: four series.
    check_png(&png, EvalFigure::size_for(4), &[rgb(0), rgb(1)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("figure written to") && err.contains("both.png"),
        "{err}"
    );

    // Several models: a JSON array of the single-model reports, unchanged by plotting.
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ja: serde_json::Value = serde_json::from_slice(&single_a.stdout).unwrap();
    let jb: serde_json::Value = serde_json::from_slice(&single_b.stdout).unwrap();
    assert_eq!(j, serde_json::json!([ja.clone(), jb.clone()]));
    assert_eq!(ja["schema"], "bridgeface.eval/1");
    assert_eq!(run(&both).stdout, out.stdout, "--plot changed the JSON");

    // SVG: the legend names each model, resolution and its AUC (the JSON's, to 4 places), and
    // the cross-resolution series.
    let svg = tmp.path().join("both.svg");
    let mut with_svg = both.clone();
    with_svg.extend(["--plot".into(), svg.to_str().unwrap().into()]);
    assert_eq!(run(&with_svg).stdout, out.stdout);
    let texts = svg_texts(&svg);
    for (name, report) in [("a.safetensors", &ja), ("b.safetensors", &jb)] {
        let same = format!(
            "{name} at 12px: AUC {:.4}",
            report["verification"]["auc"].as_f64().unwrap()
        );
        let cross = format!(
            "cross: probes {name} at 12px, gallery g.safetensors at 16px: AUC {:.4}",
            report["cross_resolution"]["verification"]["auc"]
                .as_f64()
                .unwrap()
        );
        for label in [same, cross] {
            assert!(
                texts.iter().any(|t| t.starts_with(&label)),
                "no legend entry {label:?} in {texts:?}"
            );
        }
    }
    for needle in [
        "Verification ROC (FAR on a log scale)",
        "Identification CMC (rank 1 to 20)",
        "1e-4",
        "1e-3",
        "1e-2",
        "threshold ",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(needle)),
            "no text {needle:?} in the SVG"
        );
    }
}

/// Runs `bridge` expecting failure; returns its single stderr line.
fn one_line_error(args: &[&str]) -> String {
    let out = bridge(args);
    assert!(!out.status.success(), "expected failure for {args:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(
        err.starts_with("error: ") && !err.contains("panicked"),
        "{err}"
    );
    err
}

#[test]
fn plot_draws_training_logs_old_and_new() {
    let tmp = tempfile::tempdir().unwrap();
    // The header `bridge train` and `distill step2` write today.
    let old = tmp.path().join("train.csv");
    std::fs::write(
        &old,
        "epoch,loss,accuracy,lr,faces_per_s\n\
         1,6.120000,0.010000,1.000000e-1,850.2\n\
         2,4.870000,0.120000,8.500000e-2,861.0\n\
         3,3.910000,0.310000,5.000000e-2,866.7\n\
         4,3.400000,0.420000,1.500000e-2,859.9\n",
    )
    .unwrap();
    let png = tmp.path().join("train.png");
    let out = ok(&bridge(&[
        "plot",
        old.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]))
    .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 epochs"));
    // Loss, accuracy and the other columns: three panels, each colouring its columns from the
    // start of the palette (loss, accuracy and lr take colour 0, faces_per_s colour 1).
    check_png(&png, (3 * PANEL_W, 40 + PANEL_H), &[rgb(0), rgb(1)]);

    // A newer step-2 log with held-out columns (one epoch without them yet).
    let new = tmp.path().join("step2.csv");
    std::fs::write(
        &new,
        "epoch,loss,mimic,class,heldout_cos,heldout_rank1,train_cos\n\
         1,9.0,0.60,2.4,,,0.41\n\
         2,7.5,0.50,2.0,0.52,0.61,0.50\n\
         3,6.0,0.40,1.6,0.58,0.70,0.60\n",
    )
    .unwrap();
    let svg = tmp.path().join("step2.svg");
    ok(&bridge(&[
        "plot",
        new.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]));
    let texts = svg_texts(&svg);
    for needle in [
        "loss",
        "mimic",
        "class",
        "heldout_cos",
        "heldout_rank1",
        "train_cos",
        "Loss terms",
        "Cosine and accuracy",
        "epoch",
    ] {
        assert!(
            texts.iter().any(|t| t == needle || t.contains(needle)),
            "no {needle:?} in {texts:?}"
        );
    }
    // No `Other` panel: this log has no such column.
    assert!(!texts.iter().any(|t| t.contains("Other columns")));

    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "epoch,loss\n1,0.5\n2,oops\n").unwrap();
    let err = one_line_error(&["plot", bad.to_str().unwrap(), "--out", "x.png"]);
    assert!(err.contains("line 3") && err.contains("oops"), "{err}");
    let err = one_line_error(&["plot", old.to_str().unwrap(), "--out", "x.gif"]);
    assert!(err.contains(".png or .svg"), "{err}");
    let err = one_line_error(&["plot", "missing.csv", "--out", "x.png"]);
    assert!(err.contains("missing.csv"), "{err}");
    assert!(!Path::new("x.png").exists());
}
