//! The labelled-input store of consistent distillation: numbered records of (the student's exact
//! low-resolution input, its identity, the image it was made from, the teacher's unit feature of
//! exactly that input), kept in shards of safetensors files in one folder. Each shard is written
//! atomically, so a killed labelling run keeps every finished shard and resumes after it; reading
//! memory-maps the shards, so a training run's resident memory does not grow with the number of
//! records. It reads and writes records; it must not run a model or decide what a record holds.

use super::image::Rgb8;
use crate::error::{Error, Result};
use crate::weights::{write_atomic, WeightFile};
use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The `format` metadata of a shard.
pub const STORE_FORMAT: &str = "bridgeface.labels/1";
/// Width of a stored teacher feature.
pub const FEATURE_DIM: usize = 128;
/// `[n, r, r, 3]` u8: the student's input, RGB, row-major.
const PIXELS: &str = "pixels";
/// `[n, 128]` f16: the teacher's unit feature of the input bicubic-upsampled to its side.
const FEATURES: &str = "features";
/// `[n]` u32: identity label (the data set's numbering).
const LABELS: &str = "labels";
/// `[n]` u32: the index of the image the record was made from (its main image when mixed).
const IMAGES: &str = "images";
/// Metadata keys every shard carries besides the store's identity.
const SHARD_KEYS: [&str; 4] = ["format", "shard", "first_record", "count"];

/// The records of one shard, in memory, before they are written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardData {
    pub pixels: Vec<u8>,
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub images: Vec<u32>,
}

impl ShardData {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Adds one record; `input` must be `resolution × resolution` and `feature` 128 values.
    pub fn push(&mut self, input: &Rgb8, feature: &[f32], label: usize, image: usize) {
        self.pixels.extend_from_slice(&input.pixels);
        self.features.extend_from_slice(feature);
        self.labels.push(label as u32);
        self.images.push(image as u32);
    }
}

/// The file of shard `index` in `dir`.
pub fn shard_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("shard-{index:05}.safetensors"))
}

fn format_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::WeightFormat {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes shard `index` (records `first_record..`) atomically, with the store's `identity`.
pub fn write_shard(
    dir: &Path,
    index: usize,
    first_record: usize,
    resolution: usize,
    identity: &BTreeMap<String, String>,
    data: &ShardData,
) -> Result<()> {
    let n = data.len();
    let px = resolution * resolution * 3;
    if data.pixels.len() != n * px
        || data.features.len() != n * FEATURE_DIM
        || data.images.len() != n
    {
        return Err(Error::Shape(format!(
            "shard of {n} records with {} pixel bytes, {} feature values and {} image indices \
             (expected {} and {})",
            data.pixels.len(),
            data.features.len(),
            data.images.len(),
            n * px,
            n * FEATURE_DIM
        )));
    }
    let features: Vec<f16> = data.features.iter().map(|&v| f16::from_f32(v)).collect();
    let le32 = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (labels, images) = (le32(&data.labels), le32(&data.images));
    let feature_bytes: &[u8] = bytemuck::cast_slice(&features);
    let view = |dtype, shape: Vec<usize>, bytes| {
        TensorView::new(dtype, shape, bytes).map_err(|e| Error::Shape(format!("{e:?}")))
    };
    let tensors = vec![
        (
            PIXELS.to_string(),
            view(Dtype::U8, vec![n, resolution, resolution, 3], &data.pixels)?,
        ),
        (
            FEATURES.to_string(),
            view(Dtype::F16, vec![n, FEATURE_DIM], feature_bytes)?,
        ),
        (LABELS.to_string(), view(Dtype::U32, vec![n], &labels)?),
        (IMAGES.to_string(), view(Dtype::U32, vec![n], &images)?),
    ];
    let mut meta: HashMap<String, String> = identity.clone().into_iter().collect();
    meta.insert("format".into(), STORE_FORMAT.into());
    meta.insert("shard".into(), index.to_string());
    meta.insert("first_record".into(), first_record.to_string());
    meta.insert("count".into(), n.to_string());
    meta.insert("resolution".into(), resolution.to_string());
    let bytes = safetensors::serialize(tensors, Some(meta))
        .map_err(|e| Error::Shape(format!("cannot serialise a store shard: {e:?}")))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&shard_path(dir, index), &bytes)
}

/// Whether shard `index` of `dir` exists, belongs to the store `identity` and holds exactly
/// `count` records: a labelling run skips such a shard when it resumes. A shard that exists with
/// another identity is an error, so two recipes never mix in one folder.
pub fn shard_done(
    dir: &Path,
    index: usize,
    identity: &BTreeMap<String, String>,
    count: usize,
) -> Result<bool> {
    let path = shard_path(dir, index);
    if !path.exists() {
        return Ok(false);
    }
    let w = match WeightFile::open(&path) {
        Ok(w) => w,
        // A shard is renamed into place whole, so a bad one was damaged later: redo it.
        Err(_) => return Ok(false),
    };
    if let Some((key, want)) = identity
        .iter()
        .find(|(key, v)| w.metadata().get(*key) != Some(*v))
    {
        return Err(Error::InvalidArgument(format!(
            "{} was labelled with other settings ({key}: `{}` there, `{want}` now); \
             label into another folder or delete it",
            dir.display(),
            w.metadata().get(key).map_or("(missing)", String::as_str)
        )));
    }
    Ok(w.metadata().get("count").map(String::as_str) == Some(count.to_string().as_str()))
}

/// One memory-mapped shard and the range of records it holds.
struct Shard {
    file: WeightFile,
    first: usize,
    count: usize,
}

/// A labelled-input store opened for reading: every shard memory-mapped and checked.
pub struct LabelStore {
    dir: PathBuf,
    shards: Vec<Shard>,
    shard_size: usize,
    len: usize,
    resolution: usize,
    identity: BTreeMap<String, String>,
}

impl LabelStore {
    /// Opens the consecutive shards `shard-00000…` of `dir`, checking that they share one
    /// identity, hold the declared records with the right dtypes and shapes, and follow each
    /// other without gaps (all but the last full).
    pub fn open(dir: &Path) -> Result<LabelStore> {
        let mut shards: Vec<Shard> = Vec::new();
        let mut identity: Option<BTreeMap<String, String>> = None;
        let mut resolution = 0;
        let mut len = 0;
        while shard_path(dir, shards.len()).exists() {
            let index = shards.len();
            let path = shard_path(dir, index);
            let file = WeightFile::open(&path)?;
            let meta = file.metadata();
            if meta.get("format").map(String::as_str) != Some(STORE_FORMAT) {
                return Err(format_error(&path, format!("not a {STORE_FORMAT} shard")));
            }
            let num = |key: &str| -> Result<usize> {
                meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
                    format_error(&path, format!("metadata `{key}` is missing or not a count"))
                })
            };
            let (count, first, r) = (num("count")?, num("first_record")?, num("resolution")?);
            if num("shard")? != index || first != len || count == 0 || !(4..=112).contains(&r) {
                return Err(format_error(
                    &path,
                    format!(
                        "shard {index} declares shard {}, records {first}.. ({count}) at {r} px; expected records {len}..",
                        num("shard")?
                    ),
                ));
            }
            let ident: BTreeMap<String, String> = meta
                .iter()
                .filter(|(k, _)| !SHARD_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match &identity {
                None => {
                    identity = Some(ident);
                    resolution = r;
                }
                Some(first_ident) if *first_ident != ident => {
                    return Err(format_error(
                        &path,
                        "its settings differ from shard 0's; the folder mixes two stores",
                    ))
                }
                Some(_) => {}
            }
            for (name, dtype, shape) in [
                (PIXELS, Dtype::U8, vec![count, r, r, 3]),
                (FEATURES, Dtype::F16, vec![count, FEATURE_DIM]),
                (LABELS, Dtype::U32, vec![count]),
                (IMAGES, Dtype::U32, vec![count]),
            ] {
                let e = file.entry(name)?;
                if e.dtype != dtype || e.shape != shape {
                    return Err(format_error(
                        &path,
                        format!(
                            "tensor `{name}` is {:?} {:?}, expected {dtype:?} {shape:?}",
                            e.dtype, e.shape
                        ),
                    ));
                }
            }
            if let Some(first_shard) = shards.first() {
                let size = first_shard.count;
                let prev_full = shards.last().is_some_and(|p: &Shard| p.count == size);
                if !prev_full || count > size {
                    return Err(format_error(
                        &path,
                        format!(
                            "shards hold {size} records each and only the last may hold fewer; \
                             this one holds {count} after one of {}",
                            shards.last().map_or(0, |p: &Shard| p.count)
                        ),
                    ));
                }
            }
            len += count;
            shards.push(Shard { file, first, count });
        }
        if shards.is_empty() {
            return Err(Error::EmptyInput(format!(
                "{} holds no labelled shards (shard-00000.safetensors); make them with `bridge distill label`",
                dir.display()
            )));
        }
        let shard_size = shards[0].count;
        Ok(LabelStore {
            dir: dir.to_path_buf(),
            shards,
            shard_size,
            len,
            resolution,
            identity: identity.unwrap_or_default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Side of the stored inputs.
    pub fn resolution(&self) -> usize {
        self.resolution
    }

    /// The settings the store was labelled with (shared by all shards).
    pub fn identity(&self) -> &BTreeMap<String, String> {
        &self.identity
    }

    fn locate(&self, k: usize) -> Result<(&Shard, usize)> {
        if k >= self.len {
            return Err(Error::InvalidArgument(format!(
                "record {k} is past the end of {} ({} records)",
                self.dir.display(),
                self.len
            )));
        }
        let s = &self.shards[k / self.shard_size];
        debug_assert!(s.first <= k && k < s.first + s.count);
        Ok((s, k - s.first))
    }

    /// The student's input of record `k`.
    pub fn input(&self, k: usize) -> Result<Rgb8> {
        let (s, i) = self.locate(k)?;
        let px = self.resolution * self.resolution * 3;
        Ok(Rgb8 {
            width: self.resolution,
            height: self.resolution,
            pixels: s.file.bytes(PIXELS)?[i * px..(i + 1) * px].to_vec(),
        })
    }

    /// Appends the teacher feature of record `k` (128 values) to `out`.
    pub fn feature_into(&self, k: usize, out: &mut Vec<f32>) -> Result<()> {
        let (s, i) = self.locate(k)?;
        let b = &s.file.bytes(FEATURES)?[i * FEATURE_DIM * 2..(i + 1) * FEATURE_DIM * 2];
        out.extend(
            b.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()),
        );
        Ok(())
    }

    fn u32_at(&self, name: &str, k: usize) -> Result<usize> {
        let (s, i) = self.locate(k)?;
        let b = &s.file.bytes(name)?[i * 4..i * 4 + 4];
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// The identity label of record `k`.
    pub fn label(&self, k: usize) -> Result<usize> {
        self.u32_at(LABELS, k)
    }

    /// The image record `k` was made from.
    pub fn image(&self, k: usize) -> Result<usize> {
        self.u32_at(IMAGES, k)
    }

    /// One more than the largest label.
    pub fn classes(&self) -> Result<usize> {
        let mut m = 0;
        for k in 0..self.len {
            m = m.max(self.label(k)? + 1);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(r: usize, k: usize) -> (Rgb8, Vec<f32>) {
        let img = Rgb8 {
            width: r,
            height: r,
            pixels: (0..r * r * 3)
                .map(|i| ((i * 7 + k * 13) % 256) as u8)
                .collect(),
        };
        let f: Vec<f32> = (0..FEATURE_DIM)
            .map(|i| ((i + k) as f32 * 0.37).sin() * 0.2)
            .collect();
        (img, f)
    }

    fn ident(seed: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("seed".to_string(), seed.to_string())])
    }

    #[test]
    fn shards_round_trip_and_records_are_found_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        let r = 8;
        for s in 0..3 {
            let mut d = ShardData::default();
            let n = if s == 2 { 2 } else { 4 };
            for k in s * 4..s * 4 + n {
                let (img, f) = record(r, k);
                d.push(&img, &f, k % 3, 100 + k);
            }
            write_shard(dir.path(), s, s * 4, r, &ident("1"), &d).unwrap();
        }
        let st = LabelStore::open(dir.path()).unwrap();
        assert_eq!((st.len(), st.resolution()), (10, 8));
        assert_eq!(st.identity().get("seed").map(String::as_str), Some("1"));
        for k in 0..10 {
            let (img, f) = record(r, k);
            assert_eq!(st.input(k).unwrap(), img, "record {k}");
            let mut got = Vec::new();
            st.feature_into(k, &mut got).unwrap();
            for (a, b) in got.iter().zip(&f) {
                assert!((a - b).abs() < 1e-3, "record {k}: f16 feature {a} vs {b}");
            }
            assert_eq!(st.label(k).unwrap(), k % 3);
            assert_eq!(st.image(k).unwrap(), 100 + k);
        }
        assert_eq!(st.classes().unwrap(), 3);
        assert!(st.input(10).is_err());
        assert!(shard_done(dir.path(), 1, &ident("1"), 4).unwrap());
        assert!(
            !shard_done(dir.path(), 2, &ident("1"), 4).unwrap(),
            "short shard"
        );
        assert!(
            !shard_done(dir.path(), 3, &ident("1"), 4).unwrap(),
            "absent shard"
        );
        assert!(
            shard_done(dir.path(), 0, &ident("2"), 4).is_err(),
            "another recipe in the same folder must be refused"
        );
    }

    #[test]
    fn broken_stores_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LabelStore::open(dir.path()),
            Err(Error::EmptyInput(_))
        ));
        let r = 8;
        let mut d = ShardData::default();
        let (img, f) = record(r, 0);
        d.push(&img, &f, 0, 0);
        // A short first shard followed by another: a gap in the middle of the store.
        write_shard(dir.path(), 0, 0, r, &ident("1"), &d).unwrap();
        d.push(&img, &f, 1, 1);
        write_shard(dir.path(), 1, 1, r, &ident("1"), &d).unwrap();
        assert!(
            LabelStore::open(dir.path()).is_err(),
            "shard 1 holds more records than shard 0"
        );
        std::fs::remove_file(shard_path(dir.path(), 1)).unwrap();
        let mut two = ShardData::default();
        two.push(&img, &f, 0, 0);
        two.push(&img, &f, 1, 1);
        write_shard(dir.path(), 0, 0, r, &ident("1"), &two).unwrap();
        write_shard(dir.path(), 1, 2, r, &ident("1"), &d).unwrap();
        assert_eq!(LabelStore::open(dir.path()).unwrap().len(), 4);
        let mut one = ShardData::default();
        one.push(&img, &f, 0, 0);
        write_shard(dir.path(), 1, 2, r, &ident("1"), &one).unwrap();
        write_shard(dir.path(), 2, 3, r, &ident("1"), &d).unwrap();
        assert!(
            LabelStore::open(dir.path()).is_err(),
            "shard 1 is not full like shard 0"
        );
        std::fs::remove_file(shard_path(dir.path(), 2)).unwrap();
        write_shard(dir.path(), 1, 2, r, &ident("1"), &two).unwrap();
        write_shard(dir.path(), 2, 4, r, &ident("9"), &d).unwrap();
        assert!(LabelStore::open(dir.path()).is_err(), "mixed identities");
        std::fs::write(shard_path(dir.path(), 2), b"not a shard").unwrap();
        assert!(LabelStore::open(dir.path()).is_err(), "corrupt shard");
        assert!(!shard_done(dir.path(), 2, &ident("9"), 2).unwrap());
        let bad = ShardData {
            pixels: vec![0; 5],
            ..d.clone()
        };
        assert!(write_shard(dir.path(), 3, 5, r, &ident("1"), &bad).is_err());
    }
}
