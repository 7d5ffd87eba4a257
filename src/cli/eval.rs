//! `bridge eval`: resolves the model names, runs `eval::evaluate` for each `--model` with a
//! progress bar, and prints the text or JSON reports and draws the figure. Holds no metric or
//! protocol logic.

use super::common::{default_weights, DegradeArgs};
use crate::assets;
use crate::distill::head::BridgeHead;
use crate::error::{Error, Result};
use crate::eval::embedder::{FaceEmbedder, StudentEmbedder, TeacherEmbedder};
use crate::eval::plot::{plot_format, short_model_name, write_eval_figure, EvalFigure, EvalSeries};
use crate::eval::{evaluate, EvalOptions, Evaluation};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// An ImageFolder (one sub-folder per identity, images inside).
    #[arg(long)]
    pub data: PathBuf,
    /// Faces are area-downsampled to R×R before the model sees them (a model with a larger
    /// input gets them bicubic-upsampled back).
    #[arg(long)]
    pub resolution: usize,
    /// `student` (the default weights), `teacher` (SFace), or a FILE: a student .safetensors,
    /// or a step-1 bridge .safetensors (the teacher followed by the bridge head). Give it
    /// several times to evaluate several models on the same faces and pairs (one report each,
    /// one figure for all).
    #[arg(long, default_value = "student")]
    pub model: Vec<String>,
    /// Cross-resolution mode: embed the full-resolution gallery (and the first image of each
    /// pair) with this model instead: `student`, `teacher`, or a FILE.
    #[arg(long)]
    pub gallery_model: Option<String>,
    /// An LFW-format pairs.txt (images resolved under --data) instead of generated pairs.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Print the JSON report instead of text (with several --model: an array of reports).
    #[arg(long)]
    pub json: bool,
    /// Draw the figure (log-FAR ROC with TAR at FAR 1e-3 and 1e-2, CMC, score histograms, a
    /// legend naming each model) to this .png or .svg file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seeds the impostor pairs and the folds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Faces per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Degrade every face the model sees as training does (random downsampler, blur, noise,
    /// JPEG; the options below, with the training defaults), seeded per image by --seed,
    /// instead of clean area downsampling. The cross-resolution gallery stays clean.
    #[arg(long)]
    pub degrade: bool,
    #[command(flatten)]
    pub degrade_options: DegradeArgs,
}

/// Turns a `--model` value into an embedder. The hook for new models: add a name here.
pub fn load_embedder(spec: &str) -> Result<Box<dyn FaceEmbedder>> {
    match spec {
        "student" => Ok(Box::new(StudentEmbedder::load(default_weights(None)?)?)),
        "teacher" => {
            let sface = assets::sface_onnx()?;
            let t = super::onnx::load_teacher(Some(sface.clone()))?;
            Ok(Box::new(TeacherEmbedder::new(
                t,
                None,
                sface.display().to_string(),
            )?))
        }
        file => {
            let path = Path::new(file);
            if !path.is_file() {
                return Err(Error::InvalidArgument(format!(
                    "--model {file}: not `student`, `teacher` or an existing weight file"
                )));
            }
            if BridgeHead::is_bridge_file(path) {
                // A step-1 bridge: the teacher followed by its head.
                let head = BridgeHead::load(path)?;
                let t = super::onnx::load_teacher(None)?;
                return Ok(Box::new(TeacherEmbedder::new(
                    t,
                    Some(head),
                    path.display().to_string(),
                )?));
            }
            Ok(Box::new(StudentEmbedder::load(path)?))
        }
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.batch == 0 {
        return Err(Error::InvalidArgument("--batch must be at least 1".into()));
    }
    if let Some(path) = &args.plot {
        plot_format(path)?;
    }
    let degrade = if args.degrade {
        // (A zero --resolution is `evaluate`'s error to report.)
        Some(args.degrade_options.validated(args.resolution.max(1))?)
    } else if !args.degrade_options.is_default() {
        return Err(Error::InvalidArgument(
            "the degradation options (--resample, --blur-*, --noise-*, --jpeg-*) need --degrade"
                .into(),
        ));
    } else {
        None
    };
    let models = args
        .model
        .iter()
        .map(|m| load_embedder(m))
        .collect::<Result<Vec<_>>>()?;
    let gallery = args
        .gallery_model
        .as_deref()
        .map(load_embedder)
        .transpose()?;
    let opts = EvalOptions {
        resolution: args.resolution,
        seed: args.seed,
        pairs_txt: args.pairs.clone(),
        batch: args.batch,
        degrade,
    };
    let names = legend_names(&args.model);
    let mut reports = Vec::with_capacity(models.len());
    for (name, model) in names.iter().zip(&models) {
        // Drawn on stderr, and hidden by indicatif when stderr is not a terminal.
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:40} {pos}/{len} faces ({per_sec}, eta {eta})",
            )
            .map_err(|e| Error::InvalidArgument(format!("progress bar template: {e}")))?,
        );
        bar.set_prefix(name.clone());
        let report = evaluate(
            &args.data,
            model.as_ref(),
            gallery.as_deref(),
            &opts,
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        );
        bar.finish_and_clear();
        reports.push(report?);
    }
    if let Some(path) = &args.plot {
        let gallery = args
            .gallery_model
            .as_deref()
            .map_or(String::new(), short_model_name);
        write_plot(path, &args.data, &names, &gallery, &reports)?;
    }
    if args.json {
        let json = match reports.as_slice() {
            [one] => one.to_json(),
            many => serde_json::Value::Array(many.iter().map(Evaluation::to_json).collect()),
        };
        println!("{json}");
    } else {
        let texts: Vec<String> = reports.iter().map(Evaluation::to_text).collect();
        print!("{}", texts.join("\n"));
    }
    Ok(())
}

/// The names of the `--model` values in the legend and progress bar: `student`, `teacher` or a
/// file's name, or the values as given when two files share a name.
fn legend_names(specs: &[String]) -> Vec<String> {
    let short: Vec<String> = specs.iter().map(|m| short_model_name(m)).collect();
    let clash = (0..short.len()).any(|i| short[i + 1..].contains(&short[i]));
    if clash {
        specs.to_vec()
    } else {
        short
    }
}

/// Draws every report (`names[i]` names `reports[i]`'s model in the legend, `gallery` the
/// cross-resolution gallery model) into one figure and says on stderr where it went.
pub fn write_plot(
    path: &Path,
    data: &Path,
    names: &[String],
    gallery: &str,
    reports: &[Evaluation],
) -> Result<()> {
    let series = names
        .iter()
        .zip(reports)
        .enumerate()
        .flat_map(|(k, (name, e))| EvalSeries::of(name, gallery, e, k))
        .collect();
    let first = reports
        .first()
        .ok_or_else(|| Error::EmptyInput("no evaluation to plot".into()))?;
    let figure = EvalFigure {
        title: format!(
            "{} — {} identities, {} images, {} genuine + {} impostor pairs",
            data.display(),
            first.identities,
            first.images,
            first.genuine_pairs,
            first.impostor_pairs
        ),
        series,
    };
    write_eval_figure(path, &figure)?;
    let (w, h) = EvalFigure::size_for(figure.series.len());
    eprintln!(
        "figure written to {} ({w}×{h}: ROC, CMC and score histograms; legend in the picture)",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::legend_names;

    #[test]
    fn legend_names_are_short_unless_two_files_share_a_name() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            legend_names(&v(&["student", "runs/a/s.safetensors"])),
            v(&["student", "s.safetensors"])
        );
        let same = v(&["runs/a/s.safetensors", "runs/b/s.safetensors"]);
        assert_eq!(legend_names(&same), same);
    }
}
