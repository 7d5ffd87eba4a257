//! The C example end to end: compile examples/c/embed.c with gcc against libbridgeface.a, run
//! it on generated PPM faces, and check its similarity against `bridge verify --json` to 1e-6.

use bridgeface::data::image::Rgb8;
use bridgeface::data::synthetic::synthetic_face;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// System libraries the Rust standard library needs in a static link on Linux (glibc), exactly
/// as `cargo rustc --release --lib -- --print native-static-libs` prints them. On glibc 2.34+
/// `-lpthread -ldl -lm` alone suffice (the rest are merged into libc or added by gcc), but the
/// full list also links on older systems; `-lstdc++` is for the gallery's usearch (C++), which
/// the default `gallery` feature links in. Keep in sync with docs/CLI.md and bridgeface.h.
const LINK_FLAGS: &[&str] = &[
    "-lstdc++",
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The static library to link: the one `cargo test` built alongside this test.
///
/// `cargo test` compiles the library target with all its crate types, so the staticlib exists
/// as `<profile>/deps/libbridgeface-<hash>.a`, but cargo copies it up to
/// `<profile>/libbridgeface.a` only for `cargo build`. We take the newest of those files and
/// check it is not older than any source file (cargo's own freshness rule), so a stale library
/// is never linked. Only if none is fresh do we run `$CARGO build --lib` for this profile in
/// the same target folder (only the library recompiles). Cargo releases the target folder's
/// lock before it runs the test binaries (checked with cargo 1.95: a nested build from a test
/// finishes), but a cargo that kept it would wait forever, so the nested build has a deadline.
fn static_library() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_bridge"));
    let profile_dir = bin.parent().expect("bridge binary has a folder");
    if let Some(lib) = fresh_static_library(profile_dir) {
        return lib;
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev".to_string(),
        Some(name) => name.to_string(),
    };
    let target_dir = profile_dir.parent().expect("profile folder has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("no fresh libbridgeface.a: running cargo build --lib --profile {profile}");
    let mut child = Command::new(cargo)
        .current_dir(REPO)
        .args(["build", "--lib", "--profile", &profile, "--target-dir"])
        .arg(target_dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run cargo to build the static library");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20 * 60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cargo build --lib did not finish in 20 minutes; is {} locked by the cargo \
                 running this test? Run `cargo build --release --lib` first",
                target_dir.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(status.success(), "cargo build --lib failed ({status})");
    // A successful `cargo build` leaves the library fresh by cargo's own rules, uplifted.
    let lib = profile_dir.join("libbridgeface.a");
    assert!(
        lib.is_file(),
        "cargo build --lib produced no {}",
        lib.display()
    );
    lib
}

/// The newest `libbridgeface*.a` in `profile_dir`, if it is at least as new as every source.
fn fresh_static_library(profile_dir: &Path) -> Option<PathBuf> {
    let newest_source = newest_mtime(&Path::new(REPO).join("src"));
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> =
        std::fs::read_dir(profile_dir.join("deps"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.starts_with("libbridgeface-") && name.ends_with(".a")
            })
            .chain(std::iter::once(profile_dir.join("libbridgeface.a")))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
    candidates.sort();
    candidates
        .pop()
        .filter(|(built, _)| *built >= newest_source)
        .map(|(_, lib)| lib)
}

/// The latest modification time of any file under `dir`.
fn newest_mtime(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir)
        .expect("read source folder")
        .flatten()
    {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .expect("source file mtime")
        };
        newest = newest.max(t);
    }
    newest
}

/// Compiles examples/c/embed.c into `dir` and returns the executable.
fn build_c_example(dir: &Path) -> PathBuf {
    let lib = static_library();
    eprintln!("linking {}", lib.display());
    let exe = dir.join("embed");
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(Path::new(REPO).join("include"))
        .arg(Path::new(REPO).join("examples/c/embed.c"))
        .arg(&lib)
        .args(LINK_FLAGS)
        .arg("-o")
        .arg(&exe);
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "gcc is not installed, and this test needs it to build examples/c/embed.c; \
             install it (Debian/Ubuntu: apt-get install gcc)"
        ),
        Err(e) => panic!("cannot run gcc: {e}"),
    };
    assert!(
        out.status.success(),
        "gcc failed to build the C example:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Writes a binary PPM (P6); `comment` exercises the header comments the C reader must skip.
fn write_ppm(path: &Path, img: &Rgb8, comment: bool) {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"P6\n");
    if comment {
        bytes.extend_from_slice(b"# generated by tests/c_example.rs\n");
    }
    bytes.extend_from_slice(format!("{} {}\n255\n", img.width, img.height).as_bytes());
    bytes.extend_from_slice(&img.pixels);
    std::fs::write(path, bytes).expect("write ppm");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}

/// Parses "similarity 0.123456789 same|different" from the C program.
fn c_similarity(out: &Output) -> (f64, String) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "C example failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert!(
        fields.len() == 3 && fields[0] == "similarity",
        "unexpected C output {stdout:?}"
    );
    let v = fields[1]
        .parse()
        .unwrap_or_else(|_| panic!("bad number in {stdout:?}"));
    (v, fields[2].to_string())
}

/// Runs `bridge verify --json` and returns (cosine, "same"|"different").
fn cli_similarity(model: &Path, a: &Path, b: &Path) -> (f64, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_bridge"))
        .arg("verify")
        .arg(a)
        .arg(b)
        .arg("--weights")
        .arg(model)
        .arg("--json"));
    assert!(
        out.status.success(),
        "bridge verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify prints JSON");
    let cos = v["cosine"].as_f64().expect("cosine is a number");
    let same = v["same"].as_bool().expect("same is a bool");
    (cos, if same { "same" } else { "different" }.to_string())
}

#[test]
fn c_example_agrees_with_bridge_verify() {
    let dir = std::env::temp_dir().join(format!("bridgeface-c-example-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let exe = build_c_example(&dir);

    // A random 24×24 student, written by the CLI the way a user would.
    let model = dir.join("student.safetensors");
    let out = run(Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(["init", "--seed", "11", "--resolution", "24", "--out"])
        .arg(&model));
    assert!(
        out.status.success(),
        "bridge init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "wrote a random 24×24 student (N parameters) to ..." gives the count that the C program
    // must read back through bf_model_info_t, a check of the struct layout across the ABI.
    let init_says = String::from_utf8_lossy(&out.stdout).into_owned();
    let params: u64 = init_says
        .split_once('(')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no parameter count in {init_says:?}"));

    // Two different faces; the second cropped to an odd size so both resize paths run.
    let a = dir.join("a.ppm");
    let b = dir.join("b.ppm");
    write_ppm(&a, &synthetic_face(21, 0, 0.0), true);
    let face_b = synthetic_face(22, 1, 0.08);
    let crop = Rgb8::from_strided(
        45,
        51,
        face_b.width * 3,
        &face_b.pixels[6 * 64 * 3 + 9 * 3..],
    )
    .expect("crop");
    write_ppm(&b, &crop, false);

    let expected_info = format!("model 24x24 input, 128-float embeddings, {params} parameters");
    for (x, y) in [(&a, &b), (&b, &a), (&a, &a)] {
        let c_out = run(Command::new(&exe).arg(&model).arg(x).arg(y));
        let c_err = String::from_utf8_lossy(&c_out.stderr);
        assert!(
            c_err.contains(&expected_info),
            "C program reported {c_err:?}, expected {expected_info:?}"
        );
        let (c_cos, c_verdict) = c_similarity(&c_out);
        let (r_cos, r_verdict) = cli_similarity(&model, x, y);
        assert!(
            (c_cos - r_cos).abs() <= 1e-6,
            "C example says {c_cos}, bridge verify says {r_cos} for {} vs {}",
            x.display(),
            y.display()
        );
        assert_eq!(c_verdict, r_verdict);
        if x == y {
            assert!((c_cos - 1.0).abs() <= 1e-6, "self-similarity {c_cos}");
        } else {
            assert!(c_cos < 0.999_999, "different faces gave {c_cos}");
        }
    }

    // Failures end with a non-zero exit and a message, never a crash.
    let corrupt = dir.join("corrupt.ppm");
    std::fs::write(&corrupt, b"P6\n64 64\n255\nshort").expect("write");
    let not_ppm = dir.join("not.ppm");
    std::fs::write(&not_ppm, b"P3\n1 1\n255\n0 0 0\n").expect("write");
    let missing_model = dir.join("missing.safetensors");
    let cases = [
        (model.as_path(), corrupt.as_path(), "truncated pixel data"),
        (model.as_path(), not_ppm.as_path(), "not a binary PPM"),
        (missing_model.as_path(), a.as_path(), "missing.safetensors"),
        (a.as_path(), b.as_path(), "not a valid safetensors"),
    ];
    for (m, img, needle) in cases {
        let out = run(Command::new(&exe).arg(m).arg(&a).arg(img));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
        assert!(
            err.contains(needle),
            "stderr {err:?} should mention {needle:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
