//! `bridge gallery build --from-parquet` end to end on Parquet files written here with the
//! parquet crate in the layout Ray's `write_parquet` gives `bridgeface.ray.Embedder`'s output
//! (`embedding` as a LIST of floats, `path` and `label` strings, snappy): a round trip, and each
//! bad input as one line on stderr, exit code 1, no panic.
#![cfg(feature = "gallery")]

use bridgeface::gallery::{Gallery, ModelTag};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, FloatType};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

fn bridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bridge"))
        .args(args)
        .env_remove("BRIDGE_WEIGHTS")
        .output()
        .expect("run bridge")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts a clean failure and returns its message.
fn clean_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// One row of a table to write; `vector: None` writes a null list.
struct Row {
    vector: Option<Vec<f64>>,
    label: &'static str,
    path: String,
    model: Option<String>,
}

impl Row {
    /// The value of the string column `name`.
    fn text(&self, name: &str) -> Option<String> {
        match name {
            "path" => Some(self.path.clone()),
            "label" => Some(self.label.to_string()),
            _ => self.model.clone(),
        }
    }
}

#[derive(Clone, Copy)]
struct Layout {
    /// f64 elements instead of f32.
    doubles: bool,
    with_label: bool,
    with_path: bool,
    with_model: bool,
    compression: Compression,
}

const RAY: Layout = Layout {
    doubles: false,
    with_label: true,
    with_path: true,
    with_model: true,
    compression: Compression::SNAPPY,
};

/// Writes `rows` as Ray writes a numpy batch of {embedding: N×D float32, path, label}: an
/// optional LIST of optional floats (Arrow's list<float>), optional UTF-8 strings.
fn write_table(file: &Path, rows: &[Row], layout: Layout) {
    let element = if layout.doubles { "double" } else { "float" };
    let mut schema = format!(
        "message schema {{ optional group embedding (LIST) {{ repeated group list {{ optional {element} element; }} }}"
    );
    for (on, name) in [
        (layout.with_path, "path"),
        (layout.with_label, "label"),
        (layout.with_model, "model"),
    ] {
        if on {
            schema += &format!(" optional binary {name} (UTF8);");
        }
    }
    schema += " }";
    let schema = Arc::new(parse_message_type(&schema).unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(layout.compression)
            .build(),
    );
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(file).unwrap(), schema, props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    // Definition levels of the list column: 0 null list, 3 a present element; repetition 0
    // starts a row.
    let (mut values, mut def, mut rep) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        match &r.vector {
            None => {
                def.push(0);
                rep.push(0);
            }
            Some(v) => {
                for (i, &x) in v.iter().enumerate() {
                    values.push(x);
                    def.push(3);
                    rep.push(i16::from(i > 0));
                }
            }
        }
    }
    let mut col = rg.next_column().unwrap().unwrap();
    if layout.doubles {
        col.typed::<DoubleType>()
            .write_batch(&values, Some(&def), Some(&rep))
            .unwrap();
    } else {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        col.typed::<FloatType>()
            .write_batch(&v, Some(&def), Some(&rep))
            .unwrap();
    }
    col.close().unwrap();
    for (on, name) in [
        (layout.with_path, "path"),
        (layout.with_label, "label"),
        (layout.with_model, "model"),
    ] {
        if !on {
            continue;
        }
        let mut col = rg.next_column().unwrap().unwrap();
        let got: Vec<Option<String>> = rows.iter().map(|r| r.text(name)).collect();
        let values: Vec<ByteArray> = got
            .iter()
            .flatten()
            .map(|s| ByteArray::from(s.as_str()))
            .collect();
        let def: Vec<i16> = got.iter().map(|s| i16::from(s.is_some())).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&def), None)
            .unwrap();
        col.close().unwrap();
    }
    rg.close().unwrap();
    w.close().unwrap();
}

/// Unit vectors near one of `ids` random centres, like embeddings of `ids` people.
fn face_like(n: usize, d: usize, ids: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = bridgeface::rng::Rng::new(seed);
    let centres: Vec<Vec<f64>> = (0..ids)
        .map(|_| (0..d).map(|_| rng.normal() as f64).collect())
        .collect();
    (0..n)
        .map(|i| {
            let v: Vec<f64> = centres[i % ids]
                .iter()
                .map(|c| c + 0.3 * rng.normal() as f64)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

const LABELS: [&str; 3] = ["alice", "bob", "carol"];

fn rows(vectors: &[Vec<f64>], first: usize, model: Option<&str>) -> Vec<Row> {
    vectors
        .iter()
        .enumerate()
        .map(|(i, v)| Row {
            vector: Some(v.clone()),
            label: LABELS[(first + i) % 3],
            path: format!("/faces/{}/{}.png", LABELS[(first + i) % 3], first + i),
            model: model.map(str::to_string),
        })
        .collect()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn ray_layout_round_trips_through_a_gallery() {
    let t = tmp();
    let table = t.path().join("embeddings");
    std::fs::create_dir(&table).unwrap();
    let vectors = face_like(30, 128, 3, 7);
    let tag = r#"{"kind":"student","weights_sha256":"ab12","resolution":16}"#;
    // Two files, as Ray writes one per block; read in name order. Other files are ignored.
    write_table(
        &table.join("b-000001.parquet"),
        &rows(&vectors[20..], 20, Some(tag)),
        RAY,
    );
    write_table(
        &table.join("a-000000.parquet"),
        &rows(&vectors[..20], 0, Some(tag)),
        RAY,
    );
    std::fs::write(table.join("_SUCCESS"), "").unwrap();
    let g = t.path().join("g");
    let out = bridge(&[
        "gallery",
        "build",
        "--from-parquet",
        p(&table),
        "--out",
        p(&g),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("30 faces of 3 identities from 2 Parquet files"),
        "{stdout}"
    );

    let gallery = Gallery::load(&g).unwrap();
    assert_eq!(gallery.len(), 30);
    assert_eq!(gallery.dimensions(), 128);
    let want = ModelTag {
        kind: "student".into(),
        weights_sha256: "ab12".into(),
        resolution: 16,
    };
    assert_eq!(gallery.model(), &want);
    for (i, e) in gallery.entries().iter().enumerate() {
        assert_eq!(e.label, LABELS[i % 3]);
        assert_eq!(e.path, format!("/faces/{}/{i}.png", LABELS[i % 3]));
    }
    // Every stored vector finds itself first, with the similarity of an f16 copy.
    for (i, v) in vectors.iter().enumerate() {
        let q: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        let m = gallery.search(&q, 1).unwrap();
        assert_eq!(m[0].key, i as u64);
        assert!(m[0].similarity > 0.999, "row {i}: {}", m[0].similarity);
    }
}

#[test]
fn without_a_model_column_the_gallery_is_external_and_doubles_and_gzip_are_read() {
    let t = tmp();
    let file = t.path().join("one.parquet");
    let vectors = face_like(6, 8, 3, 11);
    let layout = Layout {
        doubles: true,
        with_path: false,
        with_model: false,
        compression: Compression::GZIP(Default::default()),
        ..RAY
    };
    write_table(&file, &rows(&vectors, 0, None), layout);
    let g = t.path().join("g");
    let out = bridge(&[
        "gallery",
        "build",
        "--from-parquet",
        p(&file),
        "--out",
        p(&g),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gallery = Gallery::view(&g).unwrap();
    assert_eq!(gallery.model(), &ModelTag::external());
    assert_eq!(gallery.len(), 6);
    assert!(gallery.entries().iter().all(|e| e.path.is_empty()));
    assert_eq!(gallery.entries()[4].label, "bob");
    // `gallery search` embeds probes with a model: an external gallery refuses it.
    let probe = t.path().join("probe.png");
    image::RgbImage::new(16, 16).save(&probe).unwrap();
    let err = clean_error(&bridge(&["gallery", "search", p(&g), p(&probe)]));
    assert!(err.contains("built with the external"), "{err}");
}

/// Builds from `table` into a fresh folder and returns the one-line error.
fn build_error(table: &Path) -> String {
    let out = table.parent().unwrap().join("never");
    let err = clean_error(&bridge(&[
        "gallery",
        "build",
        "--from-parquet",
        p(table),
        "--out",
        p(&out),
    ]));
    assert!(!out.exists(), "a gallery was written despite: {err}");
    err
}

#[test]
fn bad_tables_give_one_line_errors() {
    let t = tmp();
    let dir = |name: &str| -> PathBuf {
        let d = t.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let vectors = face_like(6, 16, 3, 3);

    let empty = dir("empty");
    let err = build_error(&empty);
    assert!(err.contains("holds no .parquet files"), "{err}");

    let not_parquet = dir("text");
    std::fs::write(
        not_parquet.join("x.parquet"),
        "label,embedding\nalice,0.1\n",
    )
    .unwrap();
    let err = build_error(&not_parquet);
    assert!(err.contains("could not be read as Parquet"), "{err}");

    let truncated = dir("truncated");
    write_table(&truncated.join("x.parquet"), &rows(&vectors, 0, None), RAY);
    let bytes = std::fs::read(truncated.join("x.parquet")).unwrap();
    std::fs::write(truncated.join("x.parquet"), &bytes[..bytes.len() / 2]).unwrap();
    let err = build_error(&truncated);
    assert!(err.contains("could not be read as Parquet"), "{err}");

    let no_label = dir("nolabel");
    let layout = Layout {
        with_label: false,
        ..RAY
    };
    write_table(
        &no_label.join("x.parquet"),
        &rows(&vectors, 0, None),
        layout,
    );
    let err = build_error(&no_label);
    assert!(err.contains("no `label` column"), "{err}");

    let ragged = dir("ragged");
    let mut r = rows(&vectors, 0, None);
    r[4].vector = Some(vec![0.5; 8]);
    write_table(&ragged.join("x.parquet"), &r, RAY);
    let err = build_error(&ragged);
    assert!(
        err.contains("row 4") && err.contains("has 8 values, the rows before it 16"),
        "{err}"
    );

    // The second file's vectors are shorter than the first's.
    let two_lengths = dir("twolengths");
    write_table(
        &two_lengths.join("a.parquet"),
        &rows(&vectors, 0, None),
        RAY,
    );
    let short = face_like(3, 12, 3, 4);
    write_table(&two_lengths.join("b.parquet"), &rows(&short, 0, None), RAY);
    let err = build_error(&two_lengths);
    assert!(err.contains("b.parquet row 0"), "{err}");

    let null_vector = dir("nullvec");
    let mut r = rows(&vectors, 0, None);
    r[2].vector = None;
    write_table(&null_vector.join("x.parquet"), &r, RAY);
    let err = build_error(&null_vector);
    assert!(
        err.contains("row 2") && err.contains("null or empty"),
        "{err}"
    );

    let nan = dir("nan");
    let mut r = rows(&vectors, 0, None);
    r[1].vector.as_mut().unwrap()[3] = f64::NAN;
    write_table(&nan.join("x.parquet"), &r, RAY);
    let err = build_error(&nan);
    assert!(err.contains("non-finite"), "{err}");

    let no_rows = dir("norows");
    write_table(&no_rows.join("x.parquet"), &[], RAY);
    let err = build_error(&no_rows);
    assert!(err.contains("hold no rows"), "{err}");

    let two_models = dir("twomodels");
    let mut r = rows(
        &vectors,
        0,
        Some(r#"{"kind":"student","weights_sha256":"1","resolution":16}"#),
    );
    r[5].model = Some(r#"{"kind":"student","weights_sha256":"2","resolution":16}"#.into());
    write_table(&two_models.join("x.parquet"), &r, RAY);
    let err = build_error(&two_models);
    assert!(err.contains("`model` column changes"), "{err}");

    let bad_model = dir("badmodel");
    write_table(
        &bad_model.join("x.parquet"),
        &rows(&vectors, 0, Some("student v2")),
        RAY,
    );
    let err = build_error(&bad_model);
    assert!(err.contains("not a model tag"), "{err}");

    // A scalar where a list of floats should be.
    let scalar = dir("scalar");
    let schema = "message schema { required float embedding; required binary label (UTF8); }";
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(scalar.join("x.parquet")).unwrap(),
        Arc::new(parse_message_type(schema).unwrap()),
        Default::default(),
    )
    .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<FloatType>()
        .write_batch(&[0.5, 0.25], None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&[ByteArray::from("a"), ByteArray::from("b")], None, None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let err = build_error(&scalar);
    assert!(
        err.contains("column `embedding` is not a list of float"),
        "{err}"
    );

    let err = build_error(&t.path().join("absent"));
    assert!(err.contains("cannot access"), "{err}");

    // Image-embedding flags make no sense for vectors already made.
    let good = dir("good");
    write_table(&good.join("x.parquet"), &rows(&vectors, 0, None), RAY);
    let out = t.path().join("g2");
    let err = clean_error(&bridge(&[
        "gallery",
        "build",
        "--from-parquet",
        p(&good),
        "--out",
        p(&out),
        "--align",
    ]));
    assert!(err.contains("--align"), "{err}");
}
