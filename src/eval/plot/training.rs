//! Training curves: reads the per-epoch CSV log that `bridge train` and `distill step2` write
//! (whatever numeric columns it has) and draws them per epoch, the columns grouped by name into
//! loss terms, cosine and accuracy, and the rest. Never trains and never changes the log.

use super::{style, Drawn, Figure, FONT, PALETTE};
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// A per-epoch training log: the `epoch` column and every other column's values, `None` where a
/// cell is empty or not a finite number (such as `nan`).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingLog {
    pub path: PathBuf,
    pub epochs: Vec<f64>,
    /// (column name, one value per epoch), in the file's column order.
    pub columns: Vec<(String, Vec<Option<f64>>)>,
}

/// Which panel a column is drawn in, recognised by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// A loss term: `loss`, `mimic_loss`, `class`, `relation`, `contrast`, …
    Loss,
    /// A cosine or an accuracy, 0 to 1: `accuracy`, `heldout_cos`, `train_cos`,
    /// `heldout_rank1`, `heldout_verification`, …
    Quality,
    /// Anything else (`lr`, `faces_per_s`, …): drawn scaled to its own largest value.
    Other,
}

/// The panel of a column called `name` (compared in lower case).
pub fn column_kind(name: &str) -> ColumnKind {
    let n = name.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if has(&["loss", "mimic", "class", "relation", "contrast"]) {
        ColumnKind::Loss
    } else if has(&["cos", "acc", "rank", "verification", "auc", "tar"]) {
        ColumnKind::Quality
    } else {
        ColumnKind::Other
    }
}

impl TrainingLog {
    /// Reads a training CSV: a header whose first column is `epoch`, then one line per epoch
    /// with as many fields as the header.
    pub fn read(path: &Path) -> Result<TrainingLog> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses the text of a training CSV (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<TrainingLog> {
        let bad = |msg: String| {
            Error::InvalidArgument(format!(
                "{}: {msg} (expected a training log written by `bridge train` or `distill step2`)",
                path.display()
            ))
        };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or_else(|| bad("the file is empty".into()))?;
        let names: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
        if names.first().map(String::as_str) != Some("epoch") {
            return Err(bad(format!(
                "the first column is `{}`, not `epoch`",
                names.first().map_or("", String::as_str)
            )));
        }
        if names.len() < 2 || names.iter().any(String::is_empty) {
            return Err(bad(
                "the header has no data columns or an empty column name".into(),
            ));
        }
        let mut epochs = Vec::new();
        let mut values: Vec<Vec<Option<f64>>> = vec![Vec::new(); names.len() - 1];
        for (i, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(bad(format!(
                    "line {} has {} fields, the header {}",
                    i + 1,
                    fields.len(),
                    names.len()
                )));
            }
            let epoch: f64 = fields[0]
                .parse()
                .ok()
                .filter(|e: &f64| e.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "line {}: epoch `{}` is not a number",
                        i + 1,
                        fields[0]
                    ))
                })?;
            epochs.push(epoch);
            for (c, field) in fields[1..].iter().enumerate() {
                let v = if field.is_empty() {
                    None
                } else {
                    let x: f64 = field.parse().map_err(|_| {
                        bad(format!(
                            "line {}: `{}` = `{field}` is not a number",
                            i + 1,
                            names[c + 1]
                        ))
                    })?;
                    x.is_finite().then_some(x)
                };
                values[c].push(v);
            }
        }
        if epochs.is_empty() {
            return Err(bad("the log has a header but no epoch yet".into()));
        }
        Ok(TrainingLog {
            path: path.to_path_buf(),
            epochs,
            columns: names.into_iter().skip(1).zip(values).collect(),
        })
    }

    /// The columns of one kind that hold at least one value.
    fn of_kind(&self, kind: ColumnKind) -> Vec<(usize, &str, &[Option<f64>])> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, (n, v))| column_kind(n) == kind && v.iter().any(Option::is_some))
            .map(|(i, (n, v))| (i, n.as_str(), v.as_slice()))
            .collect()
    }

    /// The panels drawn, in order: those of the kinds the log has columns of.
    pub fn panels(&self) -> Vec<ColumnKind> {
        [ColumnKind::Loss, ColumnKind::Quality, ColumnKind::Other]
            .into_iter()
            .filter(|&k| !self.of_kind(k).is_empty())
            .collect()
    }
}

/// Size of one panel of the training figure; panels stand side by side.
pub const PANEL_W: u32 = 620;
pub const PANEL_H: u32 = 520;
const TITLE_H: u32 = 40;

/// The training figure: one panel per kind of column, epochs on the x axis.
pub struct TrainingFigure<'a> {
    pub log: &'a TrainingLog,
}

impl TrainingFigure<'_> {
    /// Checks that there is something to draw.
    pub fn check(&self) -> Result<()> {
        if self.log.panels().is_empty() {
            return Err(Error::EmptyInput(format!(
                "{}: no column holds a number to draw",
                self.log.path.display()
            )));
        }
        Ok(())
    }
}

/// Draws the training curves of `log` to `path` (PNG or SVG by its ending).
pub fn write_training_curves(path: &Path, log: &TrainingLog) -> Result<()> {
    let figure = TrainingFigure { log };
    figure.check()?;
    super::write_figure(path, &figure)
}

impl Figure for TrainingFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (
            PANEL_W * self.log.panels().len().max(1) as u32,
            TITLE_H + PANEL_H,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let (title, rest) = root.split_vertically(TITLE_H);
        let name = self
            .log
            .path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        title.draw(&Text::new(
            format!("Training log {name}: {} epochs", self.log.epochs.len()),
            (16, 10),
            (FONT, 20).into_font().style(FontStyle::Bold),
        ))?;
        let panels = self.log.panels();
        let areas = rest.split_evenly((1, panels.len()));
        for (kind, area) in panels.into_iter().zip(&areas) {
            self.draw_panel(area, kind)?;
        }
        Ok(())
    }
}

impl TrainingFigure<'_> {
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        kind: ColumnKind,
    ) -> Drawn<DB> {
        let log = self.log;
        let columns = log.of_kind(kind);
        // Columns of `Other` are each divided by their largest magnitude, so that a learning
        // rate and a throughput share one axis; the legend gives the divisor.
        let scale: Vec<f64> = columns
            .iter()
            .map(|(_, _, v)| match kind {
                ColumnKind::Other => v
                    .iter()
                    .flatten()
                    .fold(0.0f64, |m, x| m.max(x.abs()))
                    .max(f64::MIN_POSITIVE),
                _ => 1.0,
            })
            .collect();
        let values = columns
            .iter()
            .zip(&scale)
            .flat_map(|((_, _, v), s)| v.iter().flatten().map(move |x| x / s));
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let (lo, hi) = match kind {
            ColumnKind::Quality => (lo.min(0.0), hi.max(1.0)),
            ColumnKind::Other => (lo.min(0.0), 1.0),
            ColumnKind::Loss => (lo.min(0.0), hi),
        };
        let hi = if hi - lo < 1e-9 {
            lo + 1.0
        } else {
            hi + 0.05 * (hi - lo)
        };
        let (e0, e1) = log
            .epochs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &e| (a.min(e), b.max(e)));
        let (e0, e1) = if e1 - e0 < 1.0 {
            (e0 - 0.5, e1 + 0.5)
        } else {
            (e0, e1)
        };
        let (caption, y_desc) = match kind {
            ColumnKind::Loss => ("Loss terms", "loss"),
            ColumnKind::Quality => ("Cosine and accuracy", "value (0 to 1)"),
            ColumnKind::Other => ("Other columns", "value / its largest"),
        };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, (FONT, 18).into_font())
            .margin(14)
            .margin_right(24)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(e0..e1, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            // Epochs are whole numbers: ticks between them stay unlabelled.
            .x_labels(log.epochs.len().clamp(2, 11))
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        for (k, ((_, name, v), s)) in columns.iter().zip(&scale).enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            let points: Vec<(f64, f64)> = log
                .epochs
                .iter()
                .zip(v.iter())
                .filter_map(|(&e, x)| x.map(|x| (e, x / s)))
                .collect();
            let label = match kind {
                ColumnKind::Other => format!("{name} (÷ {s:.3e})"),
                _ => name.to_string(),
            };
            chart
                .draw_series(LineSeries::new(points.clone(), style(colour, 2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], style(colour, 3))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(match kind {
                ColumnKind::Loss => SeriesLabelPosition::UpperRight,
                ColumnKind::Quality => SeriesLabelPosition::LowerRight,
                // Learning rates decay towards the lower right.
                ColumnKind::Other => SeriesLabelPosition::LowerLeft,
            })
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_recognised_by_name() {
        use ColumnKind::*;
        for (name, kind) in [
            ("loss", Loss),
            ("mimic_loss", Loss),
            ("contrast", Loss),
            ("accuracy", Quality),
            ("heldout_cos", Quality),
            ("train_cos", Quality),
            ("heldout_rank1", Quality),
            ("heldout_verification", Quality),
            ("lr", Other),
            ("faces_per_s", Other),
        ] {
            assert_eq!(column_kind(name), kind, "{name}");
        }
    }

    #[test]
    fn logs_parse_old_and_new_headers_and_bad_ones_fail_with_a_reason() {
        let p = Path::new("run.csv");
        let old =
            "epoch,loss,accuracy,lr,faces_per_s\n1,5.5,0.1,1.0e-1,900.0\n2,4.0,0.3,5.0e-2,910.0\n";
        let log = TrainingLog::parse(p, old).unwrap();
        assert_eq!(log.epochs, vec![1.0, 2.0]);
        assert_eq!(log.columns.len(), 4);
        assert_eq!(
            log.columns[0],
            ("loss".to_string(), vec![Some(5.5), Some(4.0)])
        );
        use ColumnKind::*;
        assert_eq!(log.panels(), vec![Loss, Quality, Other]);

        // A newer log with held-out columns, one cell empty and one nan.
        let new = "epoch,loss,heldout_cos,train_cos\n1,2.0,,0.5\n2,1.5,nan,0.6\n";
        let log = TrainingLog::parse(p, new).unwrap();
        assert_eq!(log.columns[1].1, vec![None, None]);
        // heldout_cos holds nothing: only loss and train_cos are drawn.
        assert_eq!(log.panels(), vec![Loss, Quality]);
        assert_eq!(log.of_kind(Quality).len(), 1);

        for (text, needle) in [
            ("", "empty"),
            ("step,loss\n1,2\n", "not `epoch`"),
            ("epoch,loss\n", "no epoch"),
            ("epoch,loss\n1,2,3\n", "line 2 has 3 fields"),
            ("epoch,loss\n1,abc\n", "`loss` = `abc`"),
            ("epoch,loss\nx,1\n", "epoch `x`"),
        ] {
            let err = TrainingLog::parse(p, text).unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains("run.csv"),
                "{text:?}: {err}"
            );
        }
    }
}
