//! ROC curves drawn to a PNG (with the `image` crate and a built-in 3×5 font for the axis
//! labels, no system font; the caller prints the legend) or an SVG with a legend. Computes nothing.

use super::metrics::RocPoint;
use crate::error::{Error, Result};
use crate::weights::write_atomic;
use std::path::Path;

/// Curve colours, in order: blue, orange, green, red, purple (matplotlib's first five).
pub const COLORS: [([u8; 3], &str); 5] = [
    ([31, 119, 180], "blue"),
    ([255, 127, 14], "orange"),
    ([44, 160, 44], "green"),
    ([214, 39, 40], "red"),
    ([148, 103, 189], "purple"),
];

/// One curve to draw.
pub struct Curve<'a> {
    pub label: String,
    pub points: &'a [RocPoint],
}

const SIZE: u32 = 640;
const MARGIN: f64 = 56.0;

/// Plot coordinates of a (FAR, TAR) point.
fn to_px(far: f64, tar: f64) -> (f64, f64) {
    let span = SIZE as f64 - 2.0 * MARGIN;
    (MARGIN + far * span, SIZE as f64 - MARGIN - tar * span)
}

/// Writes ROC curves (TAR against FAR, both linear 0–1, with the chance diagonal) to `path`:
/// SVG if it ends in `.svg`, PNG if it ends in `.png`.
pub fn write_roc(path: &Path, curves: &[Curve]) -> Result<()> {
    if curves.is_empty() {
        return Err(Error::EmptyInput("no ROC curve to draw".into()));
    }
    if curves.len() > COLORS.len() {
        return Err(Error::InvalidArgument(format!(
            "at most {} curves per plot, got {}",
            COLORS.len(),
            curves.len()
        )));
    }
    let bytes = match plot_format(path)? {
        PlotFormat::Png => png(curves)?,
        PlotFormat::Svg => svg(curves).into_bytes(),
    };
    write_atomic(path, &bytes)
}

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
            "--plot {}: the file name must end in .png or .svg",
            path.display()
        ))),
    }
}

/// Draws a straight line `width` pixels thick, dashed if asked, clipped to the image.
fn line(
    img: &mut image::RgbImage,
    (x0, y0): (f64, f64),
    (x1, y1): (f64, f64),
    color: [u8; 3],
    width: i64,
    dash: bool,
) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
    for s in 0..=steps {
        if dash && (s / 12) % 2 == 1 {
            continue;
        }
        let t = s as f64 / steps as f64;
        let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        for dy in 0..width {
            for dx in 0..width {
                let px = x.round() as i64 + dx - width / 2;
                let py = y.round() as i64 + dy - width / 2;
                if px >= 0 && py >= 0 && px < SIZE as i64 && py < SIZE as i64 {
                    img.put_pixel(px as u32, py as u32, image::Rgb(color));
                }
            }
        }
    }
}

/// A 3×5 pixel font for the axis labels only (digits, the point, and the letters of FAR and
/// TAR): each glyph is five rows of three bits, most significant bit on the left.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        _ => return None,
    })
}

/// Draws `s` in black with its top-left corner at (x, y), each font pixel `scale` pixels wide.
fn text(img: &mut image::RgbImage, x: i64, y: i64, s: &str, scale: i64) {
    for (k, c) in s.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (k as i64 * 4 + col) * scale + dx;
                        let py = y + r as i64 * scale + dy;
                        if px >= 0 && py >= 0 && px < SIZE as i64 && py < SIZE as i64 {
                            img.put_pixel(px as u32, py as u32, image::Rgb([0, 0, 0]));
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `s` drawn by `text` at `scale`.
fn text_width(s: &str, scale: i64) -> i64 {
    (s.chars().count() as i64 * 4 - 1) * scale
}

fn png(curves: &[Curve]) -> Result<Vec<u8>> {
    let mut img = image::RgbImage::from_pixel(SIZE, SIZE, image::Rgb([255, 255, 255]));
    // Grid every 0.1, frame, tick marks, chance diagonal.
    for i in 0..=10 {
        let v = i as f64 / 10.0;
        let grey = if i % 5 == 0 { [190; 3] } else { [225; 3] };
        line(&mut img, to_px(v, 0.0), to_px(v, 1.0), grey, 1, false);
        line(&mut img, to_px(0.0, v), to_px(1.0, v), grey, 1, false);
        let (x, y) = to_px(v, 0.0);
        line(&mut img, (x, y), (x, y + 6.0), [0; 3], 2, false);
        let (x, y) = to_px(0.0, v);
        line(&mut img, (x - 6.0, y), (x, y), [0; 3], 2, false);
    }
    for i in 0..=5 {
        let label = format!("{:.1}", i as f64 / 5.0);
        let label = label.trim_end_matches(".0");
        let (x, y) = to_px(i as f64 / 5.0, 0.0);
        text(
            &mut img,
            x as i64 - text_width(label, 2) / 2,
            y as i64 + 12,
            label,
            2,
        );
        let (x, y) = to_px(0.0, i as f64 / 5.0);
        text(
            &mut img,
            x as i64 - 12 - text_width(label, 2),
            y as i64 - 5,
            label,
            2,
        );
    }
    let ((x0, y0), (x1, y1)) = (to_px(0.0, 0.0), to_px(1.0, 1.0));
    let mid = ((x0 + x1) / 2.0) as i64;
    text(
        &mut img,
        mid - text_width("FAR", 3) / 2,
        y0 as i64 + 28,
        "FAR",
        3,
    );
    text(&mut img, 4, y1 as i64 - 40, "TAR", 3);
    line(&mut img, (x0, y0), (x1, y1), [150; 3], 1, true);
    line(&mut img, to_px(0.0, 0.0), to_px(1.0, 0.0), [0; 3], 2, false);
    line(&mut img, to_px(0.0, 0.0), to_px(0.0, 1.0), [0; 3], 2, false);
    for (c, (color, _)) in curves.iter().zip(COLORS) {
        for w in c.points.windows(2) {
            line(
                &mut img,
                to_px(w[0].far, w[0].tar),
                to_px(w[1].far, w[1].tar),
                color,
                3,
                false,
            );
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode the ROC plot: {e}")))?;
    Ok(out.into_inner())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn svg(curves: &[Curve]) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SIZE}\" height=\"{SIZE}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for i in 0..=10 {
        let v = i as f64 / 10.0;
        let grey = if i % 5 == 0 { "#bebebe" } else { "#e1e1e1" };
        let ((xa, ya), (xb, yb)) = (to_px(v, 0.0), to_px(v, 1.0));
        s += &format!("<line x1=\"{xa:.1}\" y1=\"{ya:.1}\" x2=\"{xb:.1}\" y2=\"{yb:.1}\" stroke=\"{grey}\"/>\n");
        let ((xa, ya), (xb, yb)) = (to_px(0.0, v), to_px(1.0, v));
        s += &format!("<line x1=\"{xa:.1}\" y1=\"{ya:.1}\" x2=\"{xb:.1}\" y2=\"{yb:.1}\" stroke=\"{grey}\"/>\n");
        let (x, y) = to_px(v, 0.0);
        s += &format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{v:.1}</text>\n",
            y + 18.0
        );
        let (x, y) = to_px(0.0, v);
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>\n",
            x - 6.0,
            y + 4.0
        );
    }
    let ((x0, y0), (x1, y1)) = (to_px(0.0, 0.0), to_px(1.0, 1.0));
    s += &format!(
        "<line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\" stroke=\"#969696\" stroke-dasharray=\"6 6\"/>\n"
    );
    s += &format!(
        "<rect x=\"{x0:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"black\" stroke-width=\"1.5\"/>\n",
        x1 - x0,
        y0 - y1
    );
    s += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">false accept rate (FAR)</text>\n",
        (x0 + x1) / 2.0,
        SIZE as f64 - 12.0
    );
    s += &format!(
        "<text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">true accept rate (TAR)</text>\n",
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0
    );
    for (k, (c, (color, _))) in curves.iter().zip(COLORS).enumerate() {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|p| {
                let (x, y) = to_px(p.far, p.tar);
                format!("{x:.2},{y:.2}")
            })
            .collect();
        let hex = format!("#{:02x}{:02x}{:02x}", color[0], color[1], color[2]);
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{hex}\" stroke-width=\"2.5\"/>\n",
            pts.join(" ")
        );
        let ly = y0 - 12.0 - 18.0 * (curves.len() - 1 - k) as f64;
        s += &format!(
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{hex}\" stroke-width=\"3\"/>\n",
            x0 + 200.0,
            x0 + 224.0
        );
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            x0 + 230.0,
            ly + 4.0,
            escape(&c.label)
        );
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(f64, f64)]) -> Vec<RocPoint> {
        v.iter()
            .map(|&(far, tar)| RocPoint {
                threshold: 0.0,
                far,
                tar,
            })
            .collect()
    }

    #[test]
    fn png_has_the_curve_in_its_colour_where_expected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roc.png");
        // A perfect classifier: straight up the left edge, then along the top.
        let roc = pts(&[(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)]);
        write_roc(
            &path,
            &[Curve {
                label: "perfect".into(),
                points: &roc,
            }],
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (SIZE, SIZE));
        let (x, y) = to_px(0.5, 1.0);
        assert_eq!(img.get_pixel(x as u32, y as u32).0, COLORS[0].0);
        // The lower right stays free of the curve colour.
        let (x, y) = to_px(0.7, 0.3);
        assert_ne!(img.get_pixel(x as u32, y as u32).0, COLORS[0].0);
    }

    #[test]
    fn svg_holds_every_curve_and_escaped_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roc.svg");
        let a = pts(&[(0.0, 0.0), (0.5, 0.9), (1.0, 1.0)]);
        let b = pts(&[(0.0, 0.0), (1.0, 1.0)]);
        let curves = [
            Curve {
                label: "a <16px>".into(),
                points: &a,
            },
            Curve {
                label: "b".into(),
                points: &b,
            },
        ];
        write_roc(&path, &curves).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("a &lt;16px&gt;"));
        assert!(write_roc(&dir.path().join("roc.jpg"), &curves).is_err());
        assert!(write_roc(&dir.path().join("roc.png"), &[]).is_err());
    }
}
