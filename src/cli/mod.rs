//! The `bridge` command line: argument parsing and the subcommands. It wires library calls
//! together and formats output; it holds no numeric logic of its own.

mod commands;
pub mod device;
mod eval;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

pub use commands::default_weights;

#[derive(Parser, Debug)]
#[command(
    name = "bridge",
    version,
    about = "Low-resolution face recognition by bridge distillation"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a weight file's tensors, parameter count, size at f32 and f16, and metadata.
    Info {
        /// A .safetensors file.
        file: PathBuf,
    },
    /// Write a randomly initialised (He) student, so everything runs before training exists.
    Init {
        /// Where to write the .safetensors file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Input side in pixels, 8 to 32.
        #[arg(long, default_value_t = 16)]
        resolution: usize,
        /// Store the weights as f16 instead of f32.
        #[arg(long)]
        f16: bool,
    },
    /// Print the embedding of each image.
    Embed {
        /// Image files (any format the `image` crate reads).
        images: Vec<PathBuf>,
        /// Student weights (default: weights/student.safetensors).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Where to run the student: cpu, cuda or cuda:N (cuda needs the `cuda` feature).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// CPU threads that split the batch (default: all CPUs).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Compare two face images: cosine similarity and same or different.
    Verify {
        a: PathBuf,
        b: PathBuf,
        /// Cosine at or above which the faces are called the same (default: the model's own).
        #[arg(long)]
        threshold: Option<f32>,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The main job: a short end-to-end demonstration.
    Demo {
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Evaluate a model on a labelled folder at a resolution: verification and identification.
    Eval(eval::EvalArgs),
    /// Train the student from scratch by classification on an ImageFolder set.
    Train(Box<train::TrainArgs>),
}

/// Runs the CLI and returns the process exit code. Errors are printed as one line.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
