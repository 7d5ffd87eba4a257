//! Weight files: safetensors, memory-mapped, with zero-copy f32 views where alignment allows,
//! f16 storage converted on read, metadata, and atomic writes. Knows nothing of any model.

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use half::f16;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Storage precision for saved tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
}

/// Name, dtype, shape and byte range (relative to the data section) of one stored tensor.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub range: (usize, usize),
}

/// The bytes behind a `WeightFile`: a read-only map of a file, or bytes handed over in memory.
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An open, memory-mapped (or in-memory), validated safetensors file.
pub struct WeightFile {
    path: PathBuf,
    map: Storage,
    data_start: usize,
    tensors: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl WeightFile {
    /// Maps and validates `path`: header, offsets and total length are all checked here, so
    /// every later read is in bounds.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let format_err = |reason: String| Error::WeightFormat {
            path: path.clone(),
            reason,
        };
        if len < 8 {
            return Err(format_err(format!(
                "file is {len} bytes, shorter than a safetensors header"
            )));
        }
        // SAFETY: the map is read-only and private to this struct. Another process truncating
        // the file while it is mapped could fault; bridgeface never writes in place (all writes
        // go to a temp file that is renamed over the old one), so its own files stay intact.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        Self::validate(path, Storage::Mapped(map))
    }

    /// Validates safetensors bytes already in memory (from a network, an archive, a fuzzer).
    /// `name` stands in for the path in error messages.
    pub fn from_bytes(name: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::validate(name.as_ref().to_path_buf(), Storage::Owned(bytes))
    }

    /// Checks the header once: its declared length against the buffer (safetensors refuses a
    /// header over 100 MB before reading it), JSON, dtypes, and that the tensors' offsets tile
    /// the data section exactly with no overflow in any shape's element count.
    fn validate(path: PathBuf, map: Storage) -> Result<Self> {
        let format_err = |reason: String| Error::WeightFormat {
            path: path.clone(),
            reason,
        };
        let (header_len, meta) = SafeTensors::read_metadata(map.bytes())
            .map_err(|e| format_err(describe_safetensors_error(&e)))?;
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            tensors.insert(
                name.clone(),
                TensorEntry {
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: info.data_offsets,
                },
            );
        }
        let metadata = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(WeightFile {
            path,
            map,
            data_start: 8 + header_len,
            tensors,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensors, in name order.
    pub fn entries(&self) -> impl Iterator<Item = &TensorEntry> {
        self.tensors.values()
    }

    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A metadata value, or an error naming the missing key.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::Metadata {
                key: key.to_string(),
                reason: format!("absent from {}", self.path.display()),
            })
    }

    /// The raw bytes of a tensor.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        Ok(&self.map.bytes()[self.data_start + e.range.0..self.data_start + e.range.1])
    }

    /// The values of a tensor as f32: borrowed straight from the map when it is F32 and
    /// 4-byte aligned, otherwise copied (unaligned F32) or converted (F16).
    pub fn view_f32(&self, name: &str) -> Result<Cow<'_, [f32]>> {
        let e = self.entry(name)?;
        let bytes = self.bytes(name)?;
        match e.dtype {
            Dtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(s) => Ok(Cow::Borrowed(s)),
                Err(_) => Ok(Cow::Owned(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )),
            },
            Dtype::F16 => {
                let vals: Vec<f32> = match bytemuck::try_cast_slice::<u8, f16>(bytes) {
                    Ok(s) => s.iter().map(|v| v.to_f32()).collect(),
                    Err(_) => bytes
                        .chunks_exact(2)
                        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                };
                Ok(Cow::Owned(vals))
            }
            other => Err(Error::TensorDtype {
                name: name.to_string(),
                found: format!("{other:?}"),
            }),
        }
    }

    /// A tensor that must have exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let e = self.entry(name)?;
        if e.shape != shape {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: e.shape.clone(),
            });
        }
        Tensor::new(shape, self.view_f32(name)?.into_owned())
    }

    /// Total parameter count over all tensors.
    pub fn parameter_count(&self) -> usize {
        self.tensors
            .values()
            .map(|e| e.shape.iter().product::<usize>())
            .sum()
    }
}

/// Serialises named tensors and metadata to safetensors bytes.
pub fn serialize(
    tensors: &[(String, &Tensor)],
    metadata: &BTreeMap<String, String>,
    dtype: StoreDtype,
) -> Result<Vec<u8>> {
    let payloads: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = match dtype {
                StoreDtype::F32 => bytemuck::cast_slice::<f32, u8>(t.data()).to_vec(),
                StoreDtype::F16 => bytemuck::cast_slice::<f16, u8>(&t.to_f16()).to_vec(),
            };
            (name.clone(), t.shape().to_vec(), bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
    };
    let mut views = Vec::with_capacity(payloads.len());
    for (name, shape, bytes) in &payloads {
        let v = TensorView::new(st_dtype, shape.clone(), bytes)
            .map_err(|e| Error::Shape(format!("tensor `{name}`: {e:?}")))?;
        views.push((name.clone(), v));
    }
    let meta: HashMap<String, String> = metadata.clone().into_iter().collect();
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Shape(format!("cannot serialise weights: {e:?}")))
}

/// Writes named tensors and metadata to `path` atomically.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(String, &Tensor)],
    metadata: &BTreeMap<String, String>,
    dtype: StoreDtype,
) -> Result<()> {
    let bytes = serialize(tensors, metadata, dtype)?;
    write_atomic(path.as_ref(), &bytes)
}

/// Writes `bytes` to a temp file beside `path`, syncs it, then renames it over `path`, so a
/// crash leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// One line saying what is wrong with a safetensors header (`Error::WeightFormat` adds what to do).
fn describe_safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooLarge => "the header claims more than safetensors' 100 MB limit".to_string(),
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length".to_string(),
        E::InvalidHeaderLength => "the header length runs past the end of the file".to_string(),
        E::MetadataIncompleteBuffer => {
            "the tensors' data does not end where the file ends".to_string()
        }
        E::ValidationOverflow => "a tensor's shape overflows its element count".to_string(),
        other => other.to_string().replace('\n', " "),
    }
}
