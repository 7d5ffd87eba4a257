//! `bridge import-onnx`, `bridge export-onnx`, and loading the imported teacher and detector for
//! the other subcommands (from an `.onnx` file, an imported `.safetensors`, or the fetched assets).

use crate::assets;
use crate::error::Result;
use crate::model::detector::Detector;
use crate::model::graph::Graph;
use crate::model::student::StudentNet;
use crate::model::teacher::Teacher;
use crate::onnx;
use std::path::{Path, PathBuf};

/// An ONNX file is imported on the fly; anything else is read as an imported graph file.
pub fn load_graph(path: &Path) -> Result<Graph> {
    let is_onnx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if is_onnx {
        onnx::import_file(path)
    } else {
        Graph::load(path)
    }
}

/// The SFace teacher: `--weights` if given, else the fetched SFace ONNX.
pub fn load_teacher(weights: Option<PathBuf>) -> Result<Teacher> {
    let path = match weights {
        Some(p) => p,
        None => assets::sface_onnx()?,
    };
    Teacher::from_graph(load_graph(&path)?)
}

/// The YuNet detector: `--detector` if given, else the fetched YuNet ONNX.
pub fn load_detector(model: Option<PathBuf>) -> Result<Detector> {
    let path = match model {
        Some(p) => p,
        None => assets::yunet_onnx()?,
    };
    Detector::from_graph(load_graph(&path)?)
}

pub fn import_onnx(model: &Path, out: &Path) -> Result<()> {
    let g = onnx::import_file(model)?;
    g.save(out)?;
    let params: usize = g.params.values().map(|t| t.numel()).sum();
    let mut ops: std::collections::BTreeMap<String, usize> = Default::default();
    for n in &g.spec.nodes {
        let name = format!("{:?}", n.op);
        let kind = name.split([' ', '{', '(']).next().unwrap_or("").to_string();
        *ops.entry(kind).or_default() += 1;
    }
    println!(
        "imported {} → {}: {} nodes after folding, {params} parameters",
        model.display(),
        out.display(),
        g.spec.nodes.len()
    );
    let list: Vec<String> = ops.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    println!("ops: {}", list.join(", "));
    Ok(())
}

pub fn export_onnx(weights: &Path, out: &Path) -> Result<()> {
    let net = StudentNet::load(weights)?;
    onnx::export::export_student(&net, out)?;
    println!(
        "wrote a {0}×{0} student (input `{1}` [N, 3, {0}, {0}], output `{2}` [N, 128])",
        net.resolution(),
        onnx::export::INPUT_NAME,
        onnx::export::OUTPUT_NAME
    );
    println!("to {}", out.display());
    Ok(())
}
