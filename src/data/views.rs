//! The face set of a distillation run and its fixed augmented views: several ImageFolder roots
//! joined into one labelled list, and view `v` of image `i`, deterministic from the seed, so
//! the teacher's features of a view can be cached and the student later sees the same view;
//! also the low-resolution copies of some views that a resolution-aware bridge head trains on.

use super::augment::{augment, AugmentConfig};
use super::degrade::{degrade_to_lr, DegradeConfig};
use super::folder::ImageFolder;
use super::image::{load_rgb8, resize_area, Rgb8};
use super::resample::resize_bicubic;
use crate::error::{Error, Result};
use crate::rng::Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Several ImageFolder roots as one labelled set; identities of different roots never merge.
#[derive(Clone, Debug)]
pub struct FaceSet {
    pub roots: Vec<PathBuf>,
    /// `ROOT_NAME/IDENTITY`, in root order then name order.
    pub identities: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub labels: Vec<usize>,
}

impl FaceSet {
    /// Lists `roots`, keeping at most `max_identities` identities of each (all if `None`).
    pub fn open(roots: &[PathBuf], max_identities: Option<usize>) -> Result<FaceSet> {
        if roots.is_empty() {
            return Err(Error::parameter(
                "data",
                "no training data given (`data`: one or more ImageFolder roots)",
            ));
        }
        let mut set = FaceSet {
            roots: roots.to_vec(),
            identities: Vec::new(),
            paths: Vec::new(),
            labels: Vec::new(),
        };
        for root in roots {
            let f = ImageFolder::open(root)?;
            let keep = max_identities.unwrap_or(usize::MAX).min(f.identities.len());
            let base = set.identities.len();
            let root_name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| root.display().to_string());
            for id in &f.identities[..keep] {
                set.identities.push(format!("{root_name}/{id}"));
            }
            for s in f.samples.iter().filter(|s| s.label < keep) {
                set.paths.push(s.path.clone());
                set.labels.push(base + s.label);
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// A short hash of the listing (identity names, file names and labels, not the roots'
    /// absolute locations), so caches notice when the data changed.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for id in &self.identities {
            h.update(id.as_bytes());
            h.update([0u8]);
        }
        for (p, l) in self.paths.iter().zip(&self.labels) {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            h.update(name.unwrap_or_default().as_bytes());
            h.update((*l as u64).to_le_bytes());
        }
        let d = h.finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Which identities a validation split holds out: in each root, the identities at
    /// positions `every − 1, 2·every − 1, …` of its name order that have at least two images
    /// (one photo per person cannot be verified). `every = 0` holds out none. Returns one flag
    /// per identity.
    pub fn held_out(&self, every: usize) -> Vec<bool> {
        let mut images = vec![0usize; self.identities.len()];
        for &l in &self.labels {
            images[l] += 1;
        }
        let root_of = |id: &str| id.split('/').next().unwrap_or("").to_string();
        let mut out = vec![false; self.identities.len()];
        let mut position = 0usize;
        for (i, id) in self.identities.iter().enumerate() {
            if i > 0 && root_of(id) != root_of(&self.identities[i - 1]) {
                position = 0;
            }
            out[i] = every > 0 && position % every == every - 1 && images[i] >= 2;
            position += 1;
        }
        out
    }

    /// Decodes every image, resized (area) to `side × side` where it is not already.
    /// `progress(done)` is called after each image.
    pub fn load_images(&self, side: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Rgb8>> {
        let mut out = Vec::with_capacity(self.len());
        for (i, p) in self.paths.iter().enumerate() {
            out.push(load_chip(p, side)?);
            progress(i + 1);
        }
        Ok(out)
    }
}

/// Reads one face chip at `side × side`.
pub fn load_chip(path: &Path, side: usize) -> Result<Rgb8> {
    let img = load_rgb8(path)?;
    if img.width == side && img.height == side {
        return Ok(img);
    }
    Ok(Rgb8 {
        width: side,
        height: side,
        pixels: resize_area(&img, side, side)
            .into_iter()
            .map(|v| v.round().clamp(0.0, 255.0) as u8)
            .collect(),
    })
}

/// Fixed views of a set of images: view 0 is the image itself, views 1.. are augmentations
/// drawn from a generator seeded by (seed, image, view).
#[derive(Clone, Debug)]
pub struct ViewSet {
    pub images: Vec<Rgb8>,
    pub labels: Vec<usize>,
    pub views: usize,
    pub augment: AugmentConfig,
    pub seed: u64,
}

impl ViewSet {
    pub fn new(
        images: Vec<Rgb8>,
        labels: Vec<usize>,
        views: usize,
        augment: AugmentConfig,
        seed: u64,
    ) -> Result<ViewSet> {
        if views == 0 {
            return Err(Error::parameter("views", "`views` must be at least 1"));
        }
        if images.len() != labels.len() {
            return Err(Error::Shape(format!(
                "{} images but {} labels",
                images.len(),
                labels.len()
            )));
        }
        Ok(ViewSet {
            images,
            labels,
            views,
            augment,
            seed,
        })
    }

    /// Number of views in all (images × views).
    pub fn len(&self) -> usize {
        self.images.len() * self.views
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn classes(&self) -> usize {
        self.labels.iter().map(|l| l + 1).max().unwrap_or(0)
    }

    /// The label of view `j`.
    pub fn label(&self, j: usize) -> usize {
        self.labels[j / self.views]
    }

    /// View `j` (= image `j / views`, view `j % views`).
    pub fn view(&self, j: usize) -> Rgb8 {
        let (i, v) = (j / self.views, j % self.views);
        if v == 0 {
            return self.images[i].clone();
        }
        let mut mix =
            Rng::new(self.seed ^ 0x7615_u64.rotate_left(40) ^ ((i as u64) << 8) ^ v as u64);
        let mut rng = Rng::new(mix.next_u64());
        augment(&self.images[i], &self.augment, &mut rng)
    }
}

/// Something that yields numbered 112×112 (or any fixed-size) chips for the teacher.
pub trait ViewSource {
    fn count(&self) -> usize;
    fn chip(&self, j: usize) -> Result<Rgb8>;
}

impl ViewSource for ViewSet {
    fn count(&self) -> usize {
        self.len()
    }

    fn chip(&self, j: usize) -> Result<Rgb8> {
        Ok(self.view(j))
    }
}

/// Low-resolution copies of the first `per_image` views of every image of a `ViewSet`, each
/// degraded the way step 2 degrades the student's input (`DegradeConfig::new(r)`, with `r` drawn
/// from `resolutions`) and bicubic-upsampled back to the view's side, as the teacher sees a
/// low-resolution face. Row `l` is a copy of the view `hr_row(l)`; everything is seeded.
#[derive(Clone, Debug)]
pub struct LrViews<'a> {
    pub hr: &'a ViewSet,
    pub per_image: usize,
    pub resolutions: Vec<usize>,
    pub seed: u64,
}

impl<'a> LrViews<'a> {
    pub fn new(
        hr: &'a ViewSet,
        per_image: usize,
        resolutions: Vec<usize>,
        seed: u64,
    ) -> Result<LrViews<'a>> {
        Self::check(per_image, hr.views, &resolutions)?;
        Ok(LrViews {
            hr,
            per_image,
            resolutions,
            seed,
        })
    }

    /// Checks the settings before any work: 1 to `views` copies per image, and resolutions in
    /// 4..=112.
    pub fn check(per_image: usize, views: usize, resolutions: &[usize]) -> Result<()> {
        if per_image == 0 || per_image > views {
            return Err(Error::parameter(
                "lr_views",
                format!("`lr_views` must be 1 to the number of views ({views}), got {per_image}"),
            ));
        }
        if resolutions.is_empty() {
            return Err(Error::parameter(
                "lr_resolutions",
                "`lr_resolutions` needs at least one resolution",
            ));
        }
        if let Some(r) = resolutions.iter().find(|r| !(4..=112).contains(*r)) {
            return Err(Error::parameter(
                "lr_resolutions",
                format!("`lr_resolutions`: {r} px is outside 4..=112"),
            ));
        }
        Ok(())
    }

    /// What identifies the copies beyond their views: how many, at which resolutions, and the
    /// degradation recipe (a cache of their teacher features is reused only when all match).
    pub fn identity(&self) -> Vec<(String, String)> {
        vec![
            ("lr_views".into(), self.per_image.to_string()),
            ("lr_resolutions".into(), format!("{:?}", self.resolutions)),
            ("lr_degrade".into(), format!("{:?}", DegradeConfig::new(0))),
        ]
    }

    /// The row of the high-resolution view that low-resolution row `l` copies.
    pub fn hr_row(&self, l: usize) -> usize {
        (l / self.per_image) * self.hr.views + l % self.per_image
    }
}

impl ViewSource for LrViews<'_> {
    fn count(&self) -> usize {
        self.hr.images.len() * self.per_image
    }

    fn chip(&self, l: usize) -> Result<Rgb8> {
        let hr = self.hr.view(self.hr_row(l));
        let mut rng = Rng::new(self.seed ^ 0x1_0BE5_u64.rotate_left(24) ^ (l as u64));
        let r = self.resolutions[rng.below(self.resolutions.len())];
        let lr = degrade_to_lr(&hr, &DegradeConfig::new(r), &mut rng)?;
        resize_bicubic(&lr, hr.width, hr.height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::synthetic_face;

    #[test]
    fn views_are_deterministic_distinct_and_view_zero_is_the_image() {
        let images: Vec<Rgb8> = (0..3).map(|i| synthetic_face(i, 0, 0.0)).collect();
        let vs = ViewSet::new(images.clone(), vec![0, 1, 1], 4, AugmentConfig::heavy(), 9).unwrap();
        assert_eq!(vs.len(), 12);
        assert_eq!(vs.classes(), 2);
        assert_eq!(vs.label(5), 1);
        assert_eq!(vs.view(4), images[1]);
        assert_eq!(vs.view(5), vs.clone().view(5));
        assert_ne!(vs.view(5), vs.view(6));
        assert_ne!(vs.view(5), images[1]);
        let other = ViewSet::new(images, vec![0, 1, 1], 4, AugmentConfig::heavy(), 10).unwrap();
        assert_ne!(vs.view(5), other.view(5), "the seed must matter");
    }

    /// Mean squared difference between horizontally adjacent pixels: the fine detail a blur
    /// removes (an edge spread over w pixels keeps its total variation but loses 1/w of this).
    fn detail(img: &Rgb8) -> f64 {
        let (w, h) = (img.width, img.height);
        let mut s = 0.0f64;
        for y in 0..h {
            for x in 1..w {
                let (a, b) = ((y * w + x - 1) * 3, (y * w + x) * 3);
                s += (f64::from(img.pixels[a]) - f64::from(img.pixels[b])).powi(2);
            }
        }
        s / (h * (w - 1)) as f64
    }

    #[test]
    fn lr_views_copy_the_right_views_at_full_size_with_less_detail() {
        let images: Vec<Rgb8> = (0..3).map(|i| synthetic_face(i, 0, 0.0)).collect();
        let vs = ViewSet::new(images, vec![0, 1, 2], 4, AugmentConfig::heavy(), 9).unwrap();
        let lr = LrViews::new(&vs, 2, vec![8, 12], 5).unwrap();
        assert_eq!(lr.count(), 6);
        assert_eq!(
            (0..6).map(|l| lr.hr_row(l)).collect::<Vec<_>>(),
            [0, 1, 4, 5, 8, 9]
        );
        for l in 0..6 {
            let c = lr.chip(l).unwrap();
            let h = vs.view(lr.hr_row(l));
            assert_eq!((c.width, c.height), (h.width, h.height));
            assert!(
                detail(&c) < 0.5 * detail(&h),
                "row {l}: detail {:.2} vs the view's {:.2}",
                detail(&c),
                detail(&h)
            );
            assert_eq!(c, lr.chip(l).unwrap(), "row {l} must be deterministic");
        }
        let other = LrViews::new(&vs, 2, vec![8, 12], 6).unwrap();
        assert!((0..6).any(|l| other.chip(l).unwrap() != lr.chip(l).unwrap()));
        assert!(LrViews::new(&vs, 0, vec![8], 0).is_err());
        assert!(LrViews::new(&vs, 5, vec![8], 0).is_err());
        assert!(LrViews::new(&vs, 1, vec![], 0).is_err());
        assert!(LrViews::new(&vs, 1, vec![0], 0).is_err());
    }

    #[test]
    fn face_set_joins_roots_with_separate_labels() {
        let dir = std::env::temp_dir().join(format!("bf-views-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (root, ids) in [("a", 3usize), ("b", 2)] {
            for id in 0..ids {
                let d = dir.join(root).join(format!("p{id}"));
                std::fs::create_dir_all(&d).unwrap();
                for k in 0..2 {
                    let f = synthetic_face(id as u64, k, 0.0);
                    ::image::RgbImage::from_raw(f.width as u32, f.height as u32, f.pixels)
                        .unwrap()
                        .save(d.join(format!("{k}.png")))
                        .unwrap();
                }
            }
        }
        let set = FaceSet::open(&[dir.join("a"), dir.join("b")], None).unwrap();
        assert_eq!(set.identities.len(), 5);
        assert_eq!(set.identities[3], "b/p0");
        assert_eq!(set.labels, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(set.held_out(2), [false, true, false, false, true]);
        assert_eq!(set.held_out(0), [false; 5]);
        let limited = FaceSet::open(&[dir.join("a"), dir.join("b")], Some(1)).unwrap();
        assert_eq!(limited.labels, [0, 0, 1, 1]);
        assert_ne!(set.fingerprint(), limited.fingerprint());
        let imgs = set.load_images(32, &mut |_| {}).unwrap();
        assert!(imgs.iter().all(|i| i.width == 32 && i.height == 32));
        assert!(FaceSet::open(&[], None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
