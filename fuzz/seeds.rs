//! Writes the fuzzers' seed corpora (fuzz/corpus/TARGET/*): small, generated, never a photo.
//! Run by fuzz/make-seeds.sh; it must not write anywhere but the folder it is given.

use bridgeface::data::synthetic::synthetic_face;
use bridgeface::model::student::{StudentInfo, StudentParams};
use bridgeface::onnx::proto::*;
use bridgeface::tensor::Tensor;
use bridgeface::train::{checkpoint, TrainConfig, TrainState};
use bridgeface::weights::{self, StoreDtype};
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds OUT_DIR")?);
    weight_seeds(&out.join("weights"))?;
    checkpoint_seeds(&out.join("checkpoint"))?;
    onnx_seeds(&out.join("onnx"))?;
    image_seeds(&out.join("image"))?;
    pairs_seeds(&out.join("pairs"))?;
    gallery_seeds(&out.join("gallery"))?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    weights::write_atomic(&dir.join(name), bytes)?;
    Ok(())
}

/// Mode byte 1 + only the JSON header of a safetensors file (see fuzz/src/lib.rs).
fn header_only(file: &[u8]) -> Vec<u8> {
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let mut v = vec![1u8];
    v.extend_from_slice(&file[8..8 + n]);
    v
}

/// Mode byte 0 + a whole file.
fn whole(file: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(file);
    v
}

fn student_bytes(r: usize, dtype: StoreDtype) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let p = StudentParams::random(StudentInfo::new(r)?, 7);
    let named: Vec<(String, &Tensor)> = p.tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    Ok(weights::serialize(&named, &p.info.to_metadata(), dtype)?)
}

fn weight_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    for (r, dtype, tag) in [
        (8, StoreDtype::F32, "r8-f32"),
        (16, StoreDtype::F16, "r16-f16"),
        (32, StoreDtype::F32, "r32-f32"),
    ] {
        write(
            dir,
            &format!("header-{tag}"),
            &header_only(&student_bytes(r, dtype)?),
        )?;
    }
    // Whole small files: f32 and f16 tensors, metadata, an empty tensor.
    let a = Tensor::new(&[2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0])?;
    let b = Tensor::new(&[0], vec![])?;
    let mut meta = BTreeMap::new();
    meta.insert("architecture".to_string(), "BridgeNet".to_string());
    meta.insert("input_resolution".to_string(), "8".to_string());
    for (dtype, tag) in [(StoreDtype::F32, "f32"), (StoreDtype::F16, "f16")] {
        let bytes = weights::serialize(&[("a".into(), &a), ("b".into(), &b)], &meta, dtype)?;
        write(dir, &format!("whole-small-{tag}"), &whole(&bytes))?;
    }
    Ok(())
}

fn checkpoint_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = TrainConfig::new(8);
    let mut state = TrainState::new(&cfg, 4)?;
    // One optimiser step so the momentum buffers exist, as in a real checkpoint.
    let grads: Vec<(String, Vec<f32>)> = state
        .params
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), vec![1e-3; t.numel()]))
        .collect();
    {
        let mut slots: Vec<(&str, &mut [f32], &[f32], bool)> = state
            .params
            .tensors
            .iter_mut()
            .zip(&grads)
            .map(|((n, t), (_, g))| (n.as_str(), t.data_mut(), g.as_slice(), true))
            .collect();
        state.optim.step(&mut slots, 0.1)?;
    }
    let tmp = std::env::temp_dir().join(format!("bridgeface-seed-{}.ckpt", std::process::id()));
    checkpoint::save(&tmp, &cfg, &state)?;
    let bytes = std::fs::read(&tmp)?;
    std::fs::remove_file(&tmp)?;
    write(dir, "header-r8-sgd", &header_only(&bytes))?;
    Ok(())
}

fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn raw_f32(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: data_type::INT64,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], out: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: v,
        ..Default::default()
    }
}

fn attr_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, out: &str, dims: &[i64]) -> Vec<u8> {
    let dim = |v: i64| Dimension {
        dim_value: Some(v),
        dim_param: None,
    };
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![ValueInfoProto {
                name: "x".into(),
                r#type: Some(TypeProto {
                    tensor_type: Some(TypeProtoTensor {
                        elem_type: data_type::FLOAT,
                        shape: Some(TensorShapeProto {
                            dim: dims.iter().map(|&d| dim(d)).collect(),
                        }),
                    }),
                }),
                ..Default::default()
            }],
            output: vec![ValueInfoProto {
                name: out.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn onnx_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let w: Vec<f32> = (0..2 * 2 * 3 * 3)
        .map(|i| (i as f32 - 8.0) * 0.05)
        .collect();
    // Conv → BatchNormalization → PRelu → Add (residual) → Relu.
    let conv_bn = model(
        vec![
            node(
                "Conv",
                &["x", "w", "b"],
                "c",
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_ints("strides", &[1, 1]),
                    attr_int("group", 1),
                ],
            ),
            node(
                "BatchNormalization",
                &["c", "g", "be", "m", "v"],
                "n",
                vec![],
            ),
            node("PRelu", &["n", "s"], "p", vec![]),
            node("Add", &["p", "x"], "a", vec![]),
            node("Relu", &["a"], "y", vec![]),
        ],
        vec![
            raw_f32("w", &[2, 2, 3, 3], &w),
            floats("b", &[2], &[0.1, -0.1]),
            floats("g", &[2], &[1.0, 0.5]),
            floats("be", &[2], &[0.0, 0.2]),
            floats("m", &[2], &[0.1, 0.0]),
            floats("v", &[2], &[1.0, 2.0]),
            floats("s", &[2, 1, 1], &[0.25, 0.1]),
        ],
        "y",
        &[1, 2, 4, 4],
    );
    write(dir, "conv-bn-prelu-add", &conv_bn)?;
    // Sub → Mul → MaxPool → Resize (nearest) → Sigmoid → Transpose → Reshape.
    let pool = model(
        vec![
            node("Sub", &["x", "mean"], "s", vec![]),
            node("Mul", &["s", "scale"], "m", vec![]),
            node(
                "MaxPool",
                &["m"],
                "p",
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                ],
            ),
            node(
                "Resize",
                &["p", "", "sc"],
                "r",
                vec![
                    attr_str("mode", "nearest"),
                    attr_str("coordinate_transformation_mode", "asymmetric"),
                    attr_str("nearest_mode", "floor"),
                ],
            ),
            node("Sigmoid", &["r"], "sg", vec![]),
            node(
                "Transpose",
                &["sg"],
                "t",
                vec![attr_ints("perm", &[0, 2, 3, 1])],
            ),
            node("Reshape", &["t", "shape"], "y", vec![]),
        ],
        vec![
            floats("mean", &[3, 1, 1], &[0.5, 0.4, 0.3]),
            floats("scale", &[1], &[2.0]),
            floats("sc", &[4], &[1.0, 1.0, 2.0, 2.0]),
            ints("shape", &[1, -1, 3]),
        ],
        "y",
        &[1, 3, 4, 4],
    );
    write(dir, "sub-mul-pool-resize-transpose-reshape", &pool)?;
    // Flatten → Gemm (transB) → MatMul, with a double and an int32 initializer.
    let gemm = model(
        vec![
            node("Flatten", &["x"], "f", vec![attr_int("axis", 1)]),
            node("Gemm", &["f", "w", "b"], "g", vec![attr_int("transB", 1)]),
            node("MatMul", &["g", "w2"], "y", vec![]),
        ],
        vec![
            floats("w", &[2, 4], &[0.1, 0.2, 0.3, 0.4, -0.1, -0.2, -0.3, -0.4]),
            TensorProto {
                name: "b".into(),
                dims: vec![2],
                data_type: data_type::DOUBLE,
                double_data: vec![0.5, -0.5],
                ..Default::default()
            },
            floats("w2", &[2, 3], &[1.0, 0.0, 0.5, 0.0, 1.0, 0.5]),
            TensorProto {
                name: "unused".into(),
                dims: vec![2],
                data_type: data_type::INT32,
                int32_data: vec![1, 2],
                ..Default::default()
            },
        ],
        "y",
        &[1, 1, 2, 2],
    );
    write(dir, "flatten-gemm-matmul", &gemm)?;
    Ok(())
}

fn image_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use image::ImageFormat as F;
    let face = synthetic_face(3, 1, 0.2);
    let small = image::imageops::resize(
        &image::RgbImage::from_raw(face.width as u32, face.height as u32, face.pixels)
            .ok_or("synthetic face buffer")?,
        24,
        24,
        image::imageops::FilterType::Triangle,
    );
    let grey = image::DynamicImage::ImageRgb8(small.clone()).to_luma8();
    for (fmt, ext) in [
        (F::Png, "png"),
        (F::Jpeg, "jpg"),
        (F::Bmp, "bmp"),
        (F::Pnm, "ppm"),
        (F::Gif, "gif"),
        (F::Tiff, "tiff"),
        (F::WebP, "webp"),
    ] {
        let mut buf = std::io::Cursor::new(vec![0u8]); // mode byte: no planted detections
        buf.set_position(1);
        small.write_to(&mut buf, fmt)?;
        write(dir, &format!("pattern-{ext}.seed"), &buf.into_inner())?;
    }
    let mut buf = std::io::Cursor::new(vec![0u8]);
    buf.set_position(1);
    grey.write_to(&mut buf, F::Png)?;
    write(dir, "grey.png", &buf.into_inner())?;
    // Two planted detections (a face near the template, and a second overlapping one) + PNG.
    let mut v = vec![2u8];
    for cell in [3 * 1000u16, 3 * 1001] {
        v.extend_from_slice(&cell.to_le_bytes());
        let vals = [
            0.95f32, 0.95, 0.5, 0.5, 1.5, 1.8, -0.3, -0.2, 1.3, -0.2, 0.5, 0.3, -0.2, 0.9, 1.2, 0.9,
        ];
        v.extend(vals.iter().flat_map(|x| x.to_le_bytes()));
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    small.write_to(&mut buf, F::Png)?;
    v.extend_from_slice(&buf.into_inner());
    write(dir, "pattern-with-detections.seed", &v)?;
    Ok(())
}

fn pairs_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    write(
        dir,
        "two-folds.txt",
        b"2\t1\nAlice\t1\t2\nAlice\t1\tBob\t1\nBob\t1\t2\nCarol\t3\tDan\t4\n",
    )?;
    write(
        dir,
        "one-fold.txt",
        b"2\nAnn 1 2\nBen 2 3\nAnn 1 Ben 1\nBen 3 Ann 2\n",
    )?;
    Ok(())
}

/// Mode byte 0, `gallery.json`, a NUL, `index.usearch` (see fuzz/src/lib.rs): galleries of 0, 1
/// and 2 random 16-D vectors at the default settings, and of 50 at connectivity 4, where about
/// one node in four has neighbours above level 0. One thread, so the graph is reproducible.
fn gallery_seeds(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use bridgeface::gallery::{Gallery, IndexSettings, ModelTag, INDEX_FILE, META_FILE};
    let d = 16;
    for (n, connectivity) in [(0, 16), (1, 16), (2, 16), (50, 4)] {
        let settings = IndexSettings {
            connectivity,
            ..IndexSettings::default()
        };
        let mut g = Gallery::new(d, ModelTag::external(), settings)?;
        if n > 0 {
            let mut r = bridgeface::rng::Rng::new(n as u64);
            let v: Vec<f32> = (0..n * d).map(|_| r.normal()).collect();
            let labels: Vec<String> = (0..n).map(|i| format!("id{}", i % 5)).collect();
            let paths: Vec<String> = (0..n).map(|i| format!("{i}.png")).collect();
            g.add(&v, &labels, &paths, 1)?;
        }
        let tmp =
            std::env::temp_dir().join(format!("bridgeface-seed-gallery-{}", std::process::id()));
        g.save(&tmp)?;
        let mut seed = vec![0u8];
        seed.extend_from_slice(&std::fs::read(tmp.join(META_FILE))?);
        seed.push(0);
        seed.extend_from_slice(&std::fs::read(tmp.join(INDEX_FILE))?);
        std::fs::remove_dir_all(&tmp)?;
        write(dir, &format!("gallery-{n}-c{connectivity}"), &seed)?;
    }
    Ok(())
}
