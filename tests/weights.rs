//! Weight files: round trips at f32 and f16, zero-copy views, and every malformed-file error.

use bridgeface::weights::{self, StoreDtype, WeightFile};
use bridgeface::{Error, Tensor};
use std::collections::BTreeMap;
use std::path::PathBuf;

thread_local! {
    // One folder per test (each test runs on its own thread), removed when the test ends.
    static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
}

fn temp(name: &str) -> PathBuf {
    DIR.with(|d| d.path().join(name))
}

fn sample() -> (Vec<(String, Tensor)>, BTreeMap<String, String>) {
    let a = Tensor::new(&[2, 3], vec![1.0, -2.5, 3.25, 0.0, 1e-3, 65504.0]).unwrap();
    let b = Tensor::new(&[4], vec![0.1, 0.2, 0.3, 0.4]).unwrap();
    let mut meta = BTreeMap::new();
    meta.insert("architecture".to_string(), "Test".to_string());
    meta.insert("note".to_string(), "ünïcode ok".to_string());
    (vec![("a".into(), a), ("b.c".into(), b)], meta)
}

fn save(path: &PathBuf, dtype: StoreDtype) {
    let (ts, meta) = sample();
    let named: Vec<(String, &Tensor)> = ts.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::save(path, &named, &meta, dtype).unwrap();
}

#[test]
fn f32_round_trip_is_exact_and_zero_copy() {
    let p = temp("rt32.safetensors");
    save(&p, StoreDtype::F32);
    let w = WeightFile::open(&p).unwrap();
    let (ts, meta) = sample();
    for (name, t) in &ts {
        assert_eq!(&w.tensor(name, t.shape()).unwrap(), t);
        assert!(
            matches!(w.view_f32(name).unwrap(), std::borrow::Cow::Borrowed(_)),
            "{name} was copied"
        );
    }
    assert_eq!(w.metadata(), &meta);
    assert_eq!(w.parameter_count(), 10);
}

#[test]
fn f16_round_trip_is_within_half_precision() {
    let p = temp("rt16.safetensors");
    save(&p, StoreDtype::F16);
    let w = WeightFile::open(&p).unwrap();
    let (ts, _) = sample();
    for (name, t) in &ts {
        let got = w.tensor(name, t.shape()).unwrap();
        for (g, e) in got.data().iter().zip(t.data()) {
            assert!((g - e).abs() <= e.abs() * 1e-3 + 1e-4, "{name}: {g} vs {e}");
        }
    }
    let p32 = temp("rt16-as-f32.safetensors");
    save(&p32, StoreDtype::F32);
    let (len16, len32) = (
        std::fs::metadata(&p).unwrap().len(),
        std::fs::metadata(&p32).unwrap().len(),
    );
    assert!(
        len16 < len32,
        "f16 file ({len16} bytes) is not smaller than f32 ({len32})"
    );
}

#[test]
fn truncated_and_corrupt_files_are_format_errors() {
    let p = temp("good.safetensors");
    save(&p, StoreDtype::F32);
    let bytes = std::fs::read(&p).unwrap();
    for cut in [0, 4, 8, 20, bytes.len() - 1] {
        let q = temp(&format!("cut{cut}.safetensors"));
        std::fs::write(&q, &bytes[..cut]).unwrap();
        assert!(
            matches!(WeightFile::open(&q), Err(Error::WeightFormat { .. })),
            "cut at {cut}"
        );
    }
    let mut bad = bytes.clone();
    bad[10] = b'#'; // breaks the JSON header
    let q = temp("corrupt.safetensors");
    std::fs::write(&q, &bad).unwrap();
    assert!(matches!(
        WeightFile::open(&q),
        Err(Error::WeightFormat { .. })
    ));
    let q = temp("huge.safetensors");
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&q, &huge).unwrap();
    assert!(matches!(
        WeightFile::open(&q),
        Err(Error::WeightFormat { .. })
    ));
}

#[test]
fn missing_tensor_wrong_shape_and_wrong_dtype_are_named() {
    let p = temp("shape.safetensors");
    save(&p, StoreDtype::F32);
    let w = WeightFile::open(&p).unwrap();
    assert!(
        matches!(w.tensor("nope", &[1]), Err(Error::MissingTensor { name, .. }) if name == "nope")
    );
    assert!(matches!(
        w.tensor("a", &[3, 2]),
        Err(Error::TensorShape { .. })
    ));

    let q = temp("dtype.safetensors");
    let data = [1i32, 2, 3];
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::I32,
        vec![3],
        bytemuck::cast_slice(&data),
    )
    .unwrap();
    std::fs::write(&q, safetensors::serialize([("ints", view)], None).unwrap()).unwrap();
    let w = WeightFile::open(&q).unwrap();
    let err = w.tensor("ints", &[3]).unwrap_err();
    assert!(matches!(err, Error::TensorDtype { .. }));
    assert!(err.to_string().contains("I32"));
}

#[test]
fn missing_file_is_an_io_error_and_atomic_write_leaves_no_temp_files() {
    assert!(matches!(
        WeightFile::open(temp("does-not-exist.safetensors")),
        Err(Error::Io { .. })
    ));
    // A folder of its own, so other tests' files don't show up as leftovers.
    let p = temp("atomic").join("atomic.safetensors");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    save(&p, StoreDtype::F32);
    save(&p, StoreDtype::F16); // overwrite in place
    let dir = p.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    assert!(WeightFile::open(&p).is_ok());
    // Writing into a folder that does not exist fails cleanly and creates nothing.
    let r = weights::write_atomic(&dir.join("no/such/dir/x.safetensors"), b"abc");
    assert!(matches!(r, Err(Error::Io { .. })));
}
