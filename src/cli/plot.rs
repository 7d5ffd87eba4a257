//! `bridge plot RUN.csv --out curves.png`: draws the per-epoch curves of a training log written by
//! `bridge train` or `distill step2`. Reading and drawing live in `eval::plot::training`.

use crate::error::Result;
use crate::eval::plot::plot_format;
use crate::eval::plot::training::{write_training_curves, TrainingLog, PANEL_H, PANEL_W};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// A training log (OUT.csv of `bridge train` or `distill step2`): a header starting with
    /// `epoch`, one line per epoch.
    pub log: PathBuf,
    /// The picture to write: .png or .svg.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: PlotArgs) -> Result<()> {
    plot_format(&args.out)?;
    let log = TrainingLog::read(&args.log)?;
    write_training_curves(&args.out, &log)?;
    let panels = log.panels();
    let drawn: Vec<&str> = log.columns.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "training curves of {} epochs written to {} ({}×{}; {} panel(s); columns: {})",
        log.epochs.len(),
        args.out.display(),
        PANEL_W * panels.len() as u32,
        40 + PANEL_H,
        panels.len(),
        drawn.join(", ")
    );
    Ok(())
}
