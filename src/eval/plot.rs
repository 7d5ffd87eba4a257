//! Pictures of results, drawn with plotters: the evaluation figure (log-FAR ROC, CMC, genuine and
//! impostor score histograms, one legend for all) and, in `training`, the per-epoch curves of a
//! training log. PNG or SVG by file extension, text in the embedded DejaVu Sans (no system font).
//! Computes no metric: it draws what `evaluate` and the trainers already measured.

pub mod training;

use super::{Evaluation, Identification, Verification, CMC_RANKS};
use crate::error::{Error, Result};
use crate::weights::write_atomic;
use plotters::coord::combinators::{LogCoord, WithKeyPoints};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// The image formats a plot can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlotFormat {
    Png,
    Svg,
}

/// The format a plot path asks for, by its ending; an error for any other ending, so that a
/// command can refuse a bad `--plot` before doing any work.
pub fn plot_format(path: &Path) -> Result<PlotFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(PlotFormat::Png),
        Some("svg") => Ok(PlotFormat::Svg),
        _ => Err(Error::InvalidArgument(format!(
            "{}: a plot's file name must end in .png or .svg",
            path.display()
        ))),
    }
}

/// Series colours, in order (matplotlib's "tab10", readable on white and for most colour
/// blindness); a cross-resolution series takes its model's colour, dashed.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The font family every text of a plot uses; registered once with the embedded font.
const FONT: &str = "sans-serif";

/// Registers DejaVu Sans (from the `dejavu` crate, compiled into the binary) as `FONT`, once.
fn register_fonts() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "the embedded DejaVu Sans font could not be read (a broken build)".into(),
        ))
    }
}

/// What plotters returns from drawing on a back-end `DB`.
type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A picture of a fixed size that can be drawn on any plotters back-end.
pub trait Figure {
    /// Width and height in pixels (the SVG's user units).
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB>;
}

/// Draws `figure` to `path` (PNG or SVG by its ending), through a temp file and a rename.
pub fn write_figure(path: &Path, figure: &impl Figure) -> Result<()> {
    let format = plot_format(path)?;
    register_fonts()?;
    let (w, h) = figure.size();
    let failed = |e: String| Error::InvalidArgument(format!("drawing {}: {e}", path.display()));
    let bytes = match format {
        PlotFormat::Png => {
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
                figure.draw(&root).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            let img = image::RgbImage::from_raw(w, h, rgb)
                .ok_or_else(|| failed("the pixel buffer has the wrong size".into()))?;
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| failed(format!("PNG encoding: {e}")))?;
            out.into_inner()
        }
        PlotFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                figure.draw(&root).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            svg.into_bytes()
        }
    };
    write_atomic(path, &bytes)
}

/// One curve set of the evaluation figure: a model's verification and identification results.
pub struct EvalSeries<'a> {
    /// Names the model and the resolution, e.g. "student at 16px".
    pub label: String,
    pub verification: &'a Verification,
    pub identification: &'a Identification,
    /// Index into `PALETTE`.
    pub colour: usize,
    /// Drawn dashed: the cross-resolution results beside their model's solid curves.
    pub dashed: bool,
}

impl<'a> EvalSeries<'a> {
    /// The same-resolution series of `e` labelled "`name` at Rpx", and its cross-resolution
    /// series (dashed, same colour; its gallery model called `gallery`) when `e` has one.
    pub fn of(name: &str, gallery: &str, e: &'a Evaluation, colour: usize) -> Vec<EvalSeries<'a>> {
        let mut v = vec![EvalSeries {
            label: format!("{name} at {}px", e.resolution),
            verification: &e.verification,
            identification: &e.identification,
            colour,
            dashed: false,
        }];
        if let Some(c) = &e.cross {
            v.push(EvalSeries {
                label: format!(
                    "cross: probes {name} at {}px, gallery {gallery} at {}px",
                    e.resolution, c.gallery_input
                ),
                verification: &c.verification,
                identification: &c.identification,
                colour,
                dashed: true,
            });
        }
        v
    }

    /// The legend line: label, AUC, TAR at the two marked FARs, rank-1.
    pub fn legend(&self) -> String {
        let v = self.verification;
        format!(
            "{}: AUC {:.4}, TAR {:.1}% at FAR 1e-3, {:.1}% at 1e-2, rank-1 {:.1}%",
            self.label,
            v.auc,
            100.0 * v.tar_at_far_1e3,
            100.0 * v.tar_at_far_1e2,
            100.0 * self.identification.rank1
        )
    }

    fn colour(&self) -> RGBColor {
        PALETTE[self.colour % PALETTE.len()]
    }
}

/// A model name for a legend: a file's name without its folders (a weight file's full path is
/// in the text and JSON reports).
pub fn short_model_name(name: &str) -> String {
    Path::new(name)
        .file_name()
        .and_then(|f| f.to_str())
        .filter(|_| name.contains('/') || name.contains('.'))
        .unwrap_or(name)
        .to_string()
}

/// The evaluation figure: title, legend, then ROC (log FAR) beside CMC, then one genuine/impostor
/// score histogram per series, three to a row.
pub struct EvalFigure<'a> {
    pub title: String,
    pub series: Vec<EvalSeries<'a>>,
}

/// The figure's width; the height grows with the legend and the histogram rows.
pub const EVAL_WIDTH: u32 = 1500;
const TITLE_H: u32 = 44;
const LEGEND_ROW_H: u32 = 24;
const TOP_ROW_H: u32 = 620;
const HIST_ROW_H: u32 = 380;
const HISTS_PER_ROW: usize = 3;
/// The ROC's FAR axis: the range face verification is judged on, and above.
const FAR_MIN: f64 = 1e-4;
/// FARs marked on every ROC curve with their TAR.
const MARKED_FARS: [f64; 2] = [1e-3, 1e-2];

impl EvalFigure<'_> {
    fn legend_h(&self) -> u32 {
        16 + LEGEND_ROW_H * self.series.len() as u32
    }

    fn hist_rows(&self) -> u32 {
        self.series.len().div_ceil(HISTS_PER_ROW) as u32
    }

    /// The size a figure of `n` series has (what `size` returns).
    pub fn size_for(n: usize) -> (u32, u32) {
        let legend = 16 + LEGEND_ROW_H * n as u32;
        let hist_rows = n.div_ceil(HISTS_PER_ROW) as u32;
        (
            EVAL_WIDTH,
            TITLE_H + legend + TOP_ROW_H + HIST_ROW_H * hist_rows,
        )
    }

    /// Checks the series before any drawing: something to draw, and scores that histograms and
    /// curves can use.
    pub fn check(&self) -> Result<()> {
        if self.series.is_empty() {
            return Err(Error::EmptyInput("no results to plot".into()));
        }
        for s in &self.series {
            let v = s.verification;
            if v.roc.is_empty() || v.genuine_scores.is_empty() || v.impostor_scores.is_empty() {
                return Err(Error::EmptyInput(format!(
                    "{}: no ROC or no genuine and impostor scores to plot",
                    s.label
                )));
            }
            if v.genuine_scores
                .iter()
                .chain(&v.impostor_scores)
                .any(|x| !x.is_finite())
            {
                return Err(Error::InvalidArgument(format!(
                    "{}: a similarity score is not finite",
                    s.label
                )));
            }
        }
        Ok(())
    }
}

/// Draws `figure` to `path` (PNG or SVG by its ending).
pub fn write_eval_figure(path: &Path, figure: &EvalFigure) -> Result<()> {
    figure.check()?;
    write_figure(path, figure)
}

/// The log FAR axis with a labelled line at every decade from `FAR_MIN` (plotters' own log key
/// points can miss the left edge) and light lines at 2–9 × each decade.
fn far_axis() -> WithKeyPoints<LogCoord<f64>> {
    let decades = (FAR_MIN.log10().round() as i32)..=0;
    let bold: Vec<f64> = decades.clone().map(|e| 10f64.powi(e)).collect();
    let light: Vec<f64> = decades
        .filter(|&e| e < 0)
        .flat_map(|e| (2..10).map(move |m| m as f64 * 10f64.powi(e)))
        .collect();
    (FAR_MIN..1.0f64)
        .log_scale()
        .with_key_points(bold)
        .with_light_points(light)
}

/// A FAR tick label: 1e-4, 1e-3, 1e-2, 0.1, 1.
fn far_label(v: f64) -> String {
    if v >= 0.1 {
        format!("{v}")
    } else {
        format!("{v:.0e}")
    }
}

fn style(colour: RGBColor, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: colour.to_rgba(),
        filled: false,
        stroke_width: width,
    }
}

/// A line through `points` in `s`'s colour, dashed for a cross-resolution series.
fn series_line<DB, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    s: &EvalSeries,
    points: Vec<(X::ValueType, Y::ValueType)>,
) -> Drawn<DB>
where
    DB: DrawingBackend,
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
{
    if s.dashed {
        chart.draw_series(DashedLineSeries::new(points, 10, 6, style(s.colour(), 3)))?;
    } else {
        chart.draw_series(LineSeries::new(points, style(s.colour(), 3)))?;
    }
    Ok(())
}

impl Figure for EvalFigure<'_> {
    fn size(&self) -> (u32, u32) {
        Self::size_for(self.series.len())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        root.fill(&WHITE)?;
        let (title, rest) = root.split_vertically(TITLE_H);
        title.draw(&Text::new(
            self.title.clone(),
            (16, 12),
            (FONT, 22).into_font().style(FontStyle::Bold),
        ))?;
        let (legend, rest) = rest.split_vertically(self.legend_h());
        self.draw_legend(&legend)?;
        let (top, hists) = rest.split_vertically(TOP_ROW_H);
        let (roc, cmc) = top.split_horizontally(EVAL_WIDTH / 2);
        self.draw_roc(&roc)?;
        self.draw_cmc(&cmc)?;
        let rows = hists.split_evenly((self.hist_rows() as usize, HISTS_PER_ROW));
        for (s, area) in self.series.iter().zip(&rows) {
            draw_histogram(area, s)?;
        }
        Ok(())
    }
}

impl EvalFigure<'_> {
    fn draw_legend<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        for (k, s) in self.series.iter().enumerate() {
            let y = 8 + LEGEND_ROW_H as i32 * k as i32 + LEGEND_ROW_H as i32 / 2;
            let (x0, x1) = (24, 64);
            if s.dashed {
                area.draw(&DashedPathElement::new(
                    vec![(x0, y), (x1, y)],
                    10,
                    6,
                    style(s.colour(), 3),
                ))?;
            } else {
                area.draw(&PathElement::new(
                    vec![(x0, y), (x1, y)],
                    style(s.colour(), 3),
                ))?;
            }
            area.draw(&Text::new(
                s.legend(),
                (x1 + 12, y - 8),
                (FONT, 16).into_font(),
            ))?;
        }
        Ok(())
    }

    fn draw_roc<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let mut chart = ChartBuilder::on(area)
            .caption(
                "Verification ROC (FAR on a log scale)",
                (FONT, 19).into_font(),
            )
            .margin(14)
            .margin_right(28)
            .x_label_area_size(52)
            .y_label_area_size(64)
            .build_cartesian_2d(far_axis(), 0.0..1.0f64)?;
        chart
            .configure_mesh()
            .x_desc("false accept rate (FAR; below 1e-4 drawn at the left edge)")
            .y_desc("true accept rate (TAR)")
            .x_label_formatter(&|v| far_label(*v))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        // Chance: TAR = FAR.
        let chance: Vec<(f64, f64)> = (0..=80)
            .map(|i| {
                let far = FAR_MIN * (1.0 / FAR_MIN).powf(i as f64 / 80.0);
                (far, far)
            })
            .collect();
        chart.draw_series(DashedLineSeries::new(
            chance,
            6,
            6,
            style(RGBColor(150, 150, 150), 1),
        ))?;
        for s in &self.series {
            let points = s
                .verification
                .roc
                .iter()
                .map(|p| (p.far.max(FAR_MIN), p.tar))
                .collect();
            series_line(&mut chart, s, points)?;
        }
        // The marked operating points, labelled with their TAR.
        for s in &self.series {
            let v = s.verification;
            for (far, tar) in MARKED_FARS
                .into_iter()
                .zip([v.tar_at_far_1e3, v.tar_at_far_1e2])
            {
                // Above the marker, or below it near the top edge where there is no room.
                let dy = if tar > 0.85 { 6 } else { -20 };
                chart.draw_series(std::iter::once(
                    EmptyElement::at((far, tar))
                        + Circle::new((0, 0), 5, s.colour().filled())
                        + Text::new(
                            format!("{:.1}%", 100.0 * tar),
                            (6, dy),
                            (FONT, 13).into_font().color(&s.colour()),
                        ),
                ))?;
            }
        }
        Ok(())
    }

    fn draw_cmc<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let lowest = self
            .series
            .iter()
            .flat_map(|s| s.identification.cmc.first())
            .cloned()
            .fold(1.0f64, f64::min);
        // Start the rate axis at the tenth below the lowest rank-1 rate, so that differences
        // between good models stay visible; the axis says where it starts.
        let y0 = ((lowest * 10.0).floor() / 10.0).clamp(0.0, 0.9);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Identification CMC (rank 1 to {CMC_RANKS})"),
                (FONT, 19).into_font(),
            )
            .margin(14)
            .margin_right(28)
            .x_label_area_size(52)
            .y_label_area_size(64)
            .build_cartesian_2d(0.5..CMC_RANKS as f64 + 0.5, y0..1.0f64)?;
        chart
            .configure_mesh()
            .x_desc("rank")
            .y_desc("identification rate (true identity within rank)")
            .x_labels(CMC_RANKS)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for s in &self.series {
            let points: Vec<(f64, f64)> = s
                .identification
                .cmc
                .iter()
                .enumerate()
                .map(|(k, &r)| ((k + 1) as f64, r))
                .collect();
            series_line(&mut chart, s, points.clone())?;
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, s.colour().filled())),
            )?;
        }
        Ok(())
    }
}

/// Bins of the score histograms.
const HIST_BINS: usize = 40;

/// Fraction of `scores` in each of `HIST_BINS` bins over `lo..hi`.
fn histogram(scores: &[f32], lo: f64, hi: f64) -> Vec<f64> {
    let mut counts = vec![0usize; HIST_BINS];
    let w = (hi - lo) / HIST_BINS as f64;
    for &s in scores {
        let b = (((s as f64 - lo) / w).floor() as isize).clamp(0, HIST_BINS as isize - 1);
        counts[b as usize] += 1;
    }
    counts
        .into_iter()
        .map(|c| c as f64 / scores.len().max(1) as f64)
        .collect()
}

/// A histogram as a closed step outline over `lo..hi`.
fn steps(fracs: &[f64], lo: f64, hi: f64) -> Vec<(f64, f64)> {
    let w = (hi - lo) / fracs.len() as f64;
    let mut pts = vec![(lo, 0.0)];
    for (b, &f) in fracs.iter().enumerate() {
        pts.push((lo + b as f64 * w, f));
        pts.push((lo + (b + 1) as f64 * w, f));
    }
    pts.push((hi, 0.0));
    pts
}

fn draw_histogram<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, s: &EvalSeries) -> Drawn<DB> {
    let v = s.verification;
    let all = v.genuine_scores.iter().chain(&v.impostor_scores);
    let (mut lo, mut hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), &x| {
        (lo.min(x as f64), hi.max(x as f64))
    });
    let t = v.threshold();
    lo = lo.min(t);
    hi = hi.max(t);
    let pad = ((hi - lo) * 0.04).max(0.02);
    (lo, hi) = (lo - pad, hi + pad);
    let genuine = histogram(&v.genuine_scores, lo, hi);
    let impostor = histogram(&v.impostor_scores, lo, hi);
    let top = genuine.iter().chain(&impostor).cloned().fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("scores: {}", s.label), (FONT, 14).into_font())
        .margin(10)
        .margin_right(20)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, 0.0..top.max(1e-3))?;
    chart
        .configure_mesh()
        .x_desc("cosine similarity")
        .y_desc("fraction of pairs")
        .x_labels(6)
        .y_labels(5)
        .x_label_formatter(&|v| format!("{v:.2}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()?;
    let grey = RGBColor(110, 110, 110);
    chart
        .draw_series(
            AreaSeries::new(steps(&impostor, lo, hi), 0.0, grey.mix(0.3)).border_style(grey),
        )?
        .label(format!("impostor ({})", v.impostor_scores.len()))
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 16, y + 5)], grey.mix(0.5).filled())
        });
    let c = s.colour();
    chart
        .draw_series(AreaSeries::new(steps(&genuine, lo, hi), 0.0, c.mix(0.3)).border_style(c))?
        .label(format!("genuine ({})", v.genuine_scores.len()))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], c.mix(0.5).filled()));
    chart
        .draw_series(LineSeries::new(
            vec![(t, 0.0), (t, top.max(1e-3))],
            style(BLACK, 2),
        ))?
        .label(format!("threshold {t:.3}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style(BLACK, 2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(
            plot_format(Path::new("a/roc.PNG")).unwrap(),
            PlotFormat::Png
        );
        assert_eq!(plot_format(Path::new("roc.svg")).unwrap(), PlotFormat::Svg);
        let err = plot_format(Path::new("roc.gif")).unwrap_err().to_string();
        assert!(err.contains(".png or .svg"), "{err}");
        assert!(plot_format(Path::new("roc")).is_err());
    }

    #[test]
    fn histograms_count_every_score_once_and_clamp_the_ends() {
        let h = histogram(&[0.0, 0.5, 1.0, 1.0], 0.0, 1.0);
        assert_eq!(h.len(), HIST_BINS);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(h[HIST_BINS - 1], 0.5); // 1.0 lands in the last bin, not past it
        assert_eq!(h[0], 0.25);
        let s = steps(&h, 0.0, 1.0);
        assert_eq!(s.len(), 2 * HIST_BINS + 2);
        assert_eq!((s[0], *s.last().unwrap()), ((0.0, 0.0), (1.0, 0.0)));
    }

    #[test]
    fn short_names_drop_folders_only_from_paths() {
        assert_eq!(short_model_name("student"), "student");
        assert_eq!(
            short_model_name("weights/student.safetensors"),
            "student.safetensors"
        );
        assert_eq!(short_model_name("SFace"), "SFace");
    }
}
