//! Dataset layouts on disk: ImageFolder (`identity/file`) listing and LFW-format `pairs.txt`
//! parsing. Lists paths and labels only; decoding is `data::image`'s job.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// File endings treated as images.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "png", "jpg", "jpeg", "bmp", "pgm", "ppm", "gif", "tif", "webp",
];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for entry in rd {
        v.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    // Natural order, so `2.pgm` comes before `10.pgm` and `s2` before `s10`.
    v.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(v)
}

/// Compares strings treating runs of digits as numbers.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(c) = ai.peek().copied().filter(char::is_ascii_digit) {
                    na.push(c);
                    ai.next();
                }
                let mut nb = String::new();
                while let Some(c) = bi.peek().copied().filter(char::is_ascii_digit) {
                    nb.push(c);
                    bi.next();
                }
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let ord = ta
                    .len()
                    .cmp(&tb.len())
                    .then_with(|| ta.cmp(tb))
                    .then_with(|| na.len().cmp(&nb.len()));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                ai.next();
                bi.next();
            }
        }
    }
}

/// One image of a labelled set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    /// Index into `ImageFolder::identities`.
    pub label: usize,
}

/// An ImageFolder set: one sub-folder per identity, images inside, both in natural name order.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub identities: Vec<String>,
    pub samples: Vec<Sample>,
}

impl ImageFolder {
    /// Lists `root`. Identity folders with no images are skipped; a set with no images at all
    /// is an error.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut identities = Vec::new();
        let mut samples = Vec::new();
        for dir in sorted_entries(&root)?.into_iter().filter(|p| p.is_dir()) {
            let files: Vec<PathBuf> = sorted_entries(&dir)?
                .into_iter()
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            if files.is_empty() {
                continue;
            }
            let label = identities.len();
            identities.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            samples.extend(files.into_iter().map(|path| Sample { path, label }));
        }
        if samples.is_empty() {
            return Err(Error::EmptyInput(format!(
                "{} holds no images in identity sub-folders (expected IDENTITY/IMAGE files)",
                root.display()
            )));
        }
        Ok(ImageFolder {
            root,
            identities,
            samples,
        })
    }

    /// Lists a flat folder of images, each its own identity (named by its file stem), as for
    /// sets of one photo per person.
    pub fn open_singletons(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let files: Vec<PathBuf> = sorted_entries(&root)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            return Err(Error::EmptyInput(format!(
                "{} holds no image files",
                root.display()
            )));
        }
        let identities = files
            .iter()
            .map(|p| {
                p.file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let samples = files
            .into_iter()
            .enumerate()
            .map(|(label, path)| Sample { path, label })
            .collect();
        Ok(ImageFolder {
            root,
            identities,
            samples,
        })
    }

    /// Indices of the samples of each identity, in order.
    pub fn by_identity(&self) -> Vec<Vec<usize>> {
        let mut v = vec![Vec::new(); self.identities.len()];
        for (i, s) in self.samples.iter().enumerate() {
            v[s.label].push(i);
        }
        v
    }
}

/// One verification pair of an LFW-format `pairs.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub a: PathBuf,
    pub b: PathBuf,
    pub same: bool,
    /// Which of the file's folds it belongs to.
    pub fold: usize,
}

/// Parses an LFW-format `pairs.txt` ("FOLDS N" then, per fold, N same lines `name i j` and
/// N different lines `name1 i name2 j`), resolving images as `root/name/name_%04d.EXT` with the
/// first extension that exists (`.jpg` if none does, so a missing file fails when read).
pub fn read_lfw_pairs(pairs_txt: impl AsRef<Path>, root: impl AsRef<Path>) -> Result<Vec<Pair>> {
    let pairs_txt = pairs_txt.as_ref();
    let text = std::fs::read_to_string(pairs_txt).map_err(|e| Error::io(pairs_txt, e))?;
    parse_lfw_pairs(&text, pairs_txt, root)
}

/// Parses the text of an LFW `pairs.txt` (see `read_lfw_pairs`); `pairs_txt` names it in
/// errors. Identity names must be plain folder names (no path separator, `.` or `..`), so a
/// pairs file cannot point outside `root`.
pub fn parse_lfw_pairs(
    text: &str,
    pairs_txt: impl AsRef<Path>,
    root: impl AsRef<Path>,
) -> Result<Vec<Pair>> {
    let pairs_txt = pairs_txt.as_ref();
    let root = root.as_ref();
    let bad = |line: usize, why: &str| {
        Error::InvalidArgument(format!("{} line {line}: {why}", pairs_txt.display()))
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| bad(1, "empty file"))?;
    let head: Vec<usize> = header
        .split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| bad(1, "header must be `FOLDS PAIRS_PER_FOLD`"))
        })
        .collect::<Result<_>>()?;
    let (folds, per_fold) = match head[..] {
        [f, n] => (f, n),
        [n] => (1, n),
        _ => return Err(bad(1, "header must be `FOLDS PAIRS_PER_FOLD`")),
    };
    // Pairs per fold (genuine plus impostor) and in all; a header too large to count is refused
    // here rather than wrapping around and matching a short file.
    let fold_len = per_fold.checked_mul(2);
    let promised = fold_len.and_then(|l| l.checked_mul(folds)).ok_or_else(|| {
        bad(
            1,
            &format!("header promises {folds} × 2 × {per_fold} pairs, more than can be counted"),
        )
    })?;
    let fold_len = fold_len.unwrap_or(1).max(1);
    let image = |name: &str, idx: usize| -> PathBuf {
        let stem = format!("{name}_{idx:04}");
        for ext in ["jpg", "png", "jpeg", "pgm"] {
            let p = root.join(name).join(format!("{stem}.{ext}"));
            if p.exists() {
                return p;
            }
        }
        root.join(name).join(format!("{stem}.jpg"))
    };
    let mut pairs = Vec::new();
    for (k, (ln, line)) in lines.enumerate() {
        let fold = k / fold_len;
        let t: Vec<&str> = line.split_whitespace().collect();
        let names = match t[..] {
            [name, _, _] => &[name][..],
            [n1, _, n2, _] => &[n1, n2][..],
            _ => &[][..],
        };
        if let Some(n) = names
            .iter()
            .find(|n| n.contains(['/', '\\']) || **n == "." || **n == "..")
        {
            return Err(bad(
                ln + 1,
                &format!("identity `{n}` is not a plain folder name (no `/`, `\\`, `.` or `..`)"),
            ));
        }
        let num = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| bad(ln + 1, "image index is not a number"))
        };
        let pair = match t[..] {
            [name, i, j] => Pair {
                a: image(name, num(i)?),
                b: image(name, num(j)?),
                same: true,
                fold,
            },
            [n1, i, n2, j] => Pair {
                a: image(n1, num(i)?),
                b: image(n2, num(j)?),
                same: false,
                fold,
            },
            _ => return Err(bad(ln + 1, "expected `name i j` or `name1 i name2 j`")),
        };
        pairs.push(pair);
    }
    if pairs.len() != promised {
        return Err(bad(
            1,
            &format!("header promises {promised} pairs, file has {}", pairs.len()),
        ));
    }
    Ok(pairs)
}
