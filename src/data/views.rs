//! The face set of a distillation run and its fixed augmented views: several ImageFolder roots
//! joined into one labelled list, and view `v` of image `i`, deterministic from the seed, so
//! the teacher's features of a view can be cached and the student later sees the same view.

use super::augment::{augment, AugmentConfig};
use super::folder::ImageFolder;
use super::image::{load_rgb8, resize_area, Rgb8};
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
            return Err(Error::InvalidArgument(
                "no training data given (--data DIR, one or more)".into(),
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
            return Err(Error::InvalidArgument("--views must be at least 1".into()));
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
        let limited = FaceSet::open(&[dir.join("a"), dir.join("b")], Some(1)).unwrap();
        assert_eq!(limited.labels, [0, 0, 1, 1]);
        assert_ne!(set.fingerprint(), limited.fingerprint());
        let imgs = set.load_images(32, &mut |_| {}).unwrap();
        assert!(imgs.iter().all(|i| i.width == 32 && i.height == 32));
        assert!(FaceSet::open(&[], None).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
