//! The C ABI of the static library (`include/bridgeface.h`): model handles, status codes, the
//! thread-local last error, panic containment. It must not compute: it checks, converts, calls.
//!
//! # Handles
//!
//! A `bf_model*` handed to C is never a pointer to memory: it is an opaque, never-reused number
//! that keys a process-wide registry of live models (`Arc<LoadedModel>`). Every entry point looks
//! the handle up before use, so a freed, doubly freed, forged or garbage handle is answered with
//! `BF_ERR_INVALID_HANDLE` instead of a read of freed memory. We chose this over a real
//! `Box` pointer with a magic tag because a tag check must dereference the pointer (undefined
//! behaviour once it is freed, and the allocator may have reused the memory for a new model, the
//! ABA problem); a registry of addresses has the same reuse problem. Numbers from a counter are
//! never reused, and scrambling them with an odd multiplier (a bijection) keeps small garbage
//! values such as 1 or 0x10 from naming a live model by accident.
//!
//! # Threads
//!
//! Models are immutable after load. Every function may be called from any thread at the same
//! time, with the same or different handles. A lookup clones the model's `Arc` under a short lock
//! and computes without the lock, so concurrent embeddings run in parallel, and `bf_model_free`
//! on one thread while another embeds only ends the handle: the running call finishes with its
//! own reference. `bf_last_error` is per thread.

use crate::cpu::{self, Kernels};
use crate::data::image::Rgb8;
use crate::embed::embed_rgb;
use crate::error::Error;
use crate::model::student::{StudentNet, StudentParams};
use crate::ops;
use crate::tensor::Tensor;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Status of every fallible call (`bf_status` in C). `BF_OK` is 0; every error is non-zero and
/// leaves a one-line message in `bf_last_error()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullPointer = 1,
    /// The model handle is not a live model (never loaded, already freed, or garbage).
    InvalidHandle = 2,
    /// An argument is out of range: n = 0, empty image, row stride < width × 3, a shape that
    /// differs from the model's input, a size that overflows, non-finite input, a misaligned
    /// float or struct pointer.
    InvalidArgument = 3,
    /// A file could not be read (missing, unreadable).
    Io = 4,
    /// The file is not a valid student weight file (corrupt, truncated, wrong tensors).
    ModelFormat = 5,
    /// This CPU lacks the instruction set the kernels need (or `BRIDGE_ISA` names one it lacks).
    Unsupported = 6,
    /// A bug inside the library was caught (a panic); the library is still usable.
    Internal = 7,
    /// Any other library error; `bf_last_error()` says which.
    Other = 8,
}

/// Opaque model type: C only ever holds `bf_model*` handles, never dereferences them.
#[repr(C)]
pub struct BfModel {
    _opaque: [u8; 0],
}

/// What `bf_model_info` fills in (`bf_model_info_t` in C).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BfModelInfo {
    /// Input side in pixels: the model takes `resolution × resolution` RGB faces.
    pub resolution: u32,
    /// Floats per embedding (128 for BridgeNet).
    pub embedding_size: u32,
    /// Stored values in the weight file (BN running statistics included).
    pub parameter_count: u64,
    /// Cosine similarity at or above which two faces are called the same person.
    pub threshold: f32,
    /// Per-channel (R, G, B) normalisation: input = (pixel - mean) / std, pixels in 0..255.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A model as the registry keeps it: folded network, its kernel table, and its size.
struct LoadedModel {
    net: StudentNet,
    kernels: &'static Kernels,
    parameter_count: usize,
}

/// Live models by handle number. BTreeMap::new is const, so no lazy initialisation is needed.
static MODELS: Mutex<BTreeMap<usize, Arc<LoadedModel>>> = Mutex::new(BTreeMap::new());
/// Next handle counter value; scrambled by `HANDLE_SCRAMBLE` before it is handed out.
static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(1);
/// An odd multiplier (the 64-bit golden ratio, truncated on 32-bit targets, where it stays odd):
/// multiplication by an odd number is a bijection modulo 2^bits, so handles stay unique.
const HANDLE_SCRAMBLE: usize = 0x9E37_79B9_7F4A_7C15_u64 as usize;

thread_local! {
    /// The message of the last failed call on this thread ("" after a success).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: its status and one-line message.
struct Failure {
    status: BfStatus,
    message: String,
}

impl Failure {
    fn new(status: BfStatus, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn null(what: &str) -> Self {
        Failure::new(BfStatus::NullPointer, format!("{what} is NULL"))
    }

    fn invalid(message: impl Into<String>) -> Self {
        Failure::new(BfStatus::InvalidArgument, message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } | Error::MissingAsset(_) => BfStatus::Io,
            Error::WeightFormat { .. }
            | Error::MissingTensor { .. }
            | Error::TensorShape { .. }
            | Error::TensorDtype { .. }
            | Error::Metadata { .. } => BfStatus::ModelFormat,
            Error::Shape(_)
            | Error::Image { .. }
            | Error::EmptyInput(_)
            | Error::InvalidArgument(_)
            | Error::InvalidParameter { .. } => BfStatus::InvalidArgument,
            Error::UnsupportedIsa(_) => BfStatus::Unsupported,
            // Variants added later map here until someone gives them a status of their own.
            #[allow(unreachable_patterns)]
            _ => BfStatus::Other,
        };
        Failure::new(status, e.to_string())
    }
}

fn set_last_error(message: &str) {
    // CString cannot hold NUL bytes; none of our messages should contain one, but a path might.
    let clean = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    // `try_with` fails only during thread teardown, when there is no one left to read it.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = clean);
}

/// Runs one entry point's body: clears the thread's last error, catches any panic, and turns
/// the outcome into a status. The `AssertUnwindSafe` is sound because a panic abandons every
/// value the body created; the only shared state, the registry, is changed by single map
/// operations and read through a poison-tolerant lock.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> BfStatus {
    set_last_error("");
    let outcome = panic::catch_unwind(AssertUnwindSafe(body));
    let failure = match outcome {
        Ok(Ok(())) => return BfStatus::Ok,
        Ok(Err(f)) => f,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Failure::new(
                BfStatus::Internal,
                format!("internal error (a bug in bridgeface, please report it): {what}"),
            )
        }
    };
    set_last_error(&failure.message);
    failure.status
}

fn registry() -> MutexGuard<'static, BTreeMap<usize, Arc<LoadedModel>>> {
    // Poisoning only means a panic happened elsewhere while the lock was held; each map
    // operation is complete or not started, so the map is still consistent.
    MODELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The live model behind `handle`, or the reason there is none.
fn lookup(handle: *const BfModel) -> Result<Arc<LoadedModel>, Failure> {
    if handle.is_null() {
        return Err(Failure::null("model"));
    }
    registry().get(&(handle as usize)).cloned().ok_or_else(|| {
        Failure::new(
            BfStatus::InvalidHandle,
            format!(
                "model handle {handle:p} is not a live model (already freed, or never returned by bf_model_load)"
            ),
        )
    })
}

/// `a * b * ...` as a byte or element count that a Rust slice may span (≤ isize::MAX bytes).
fn checked_len(factors: &[usize], elem_size: usize, what: &str) -> Result<usize, Failure> {
    let mut n = 1usize;
    for &f in factors {
        n = n
            .checked_mul(f)
            .ok_or_else(|| Failure::invalid(format!("{what}: size overflows")))?;
    }
    match n.checked_mul(elem_size) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(n),
        _ => Err(Failure::invalid(format!("{what}: size overflows"))),
    }
}

/// Rejects NULL and misaligned pointers: Rust reads and writes through `T` only at `T`'s
/// alignment, and a misaligned `float*` from C would be undefined behaviour, not an error.
fn check_ptr<T>(p: *const T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::null(what));
    }
    if (p as usize) % std::mem::align_of::<T>() != 0 {
        return Err(Failure::invalid(format!(
            "{what} ({p:p}) is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    Ok(())
}

/// Copies a finished batch of `n` embeddings into the caller's buffer of
/// `n × embedding_size` floats, after checking that the batch has exactly that size.
///
/// # Safety
/// `out` must be non-null, aligned and valid for writes of `n * embedding_size` floats.
unsafe fn write_embeddings(
    emb: &Tensor,
    n: usize,
    embedding_size: usize,
    out: *mut f32,
) -> Result<(), Failure> {
    if emb.shape() != [n, embedding_size] {
        return Err(Failure::new(
            BfStatus::Internal,
            format!(
                "internal error: the model produced {:?}, not [{n}, {embedding_size}]",
                emb.shape()
            ),
        ));
    }
    // SAFETY: the caller guarantees `out` holds n × embedding_size writable floats, which is
    // exactly `emb.numel()` (checked above); a Rust tensor never overlaps caller memory.
    unsafe { std::ptr::copy_nonoverlapping(emb.data().as_ptr(), out, emb.numel()) };
    Ok(())
}

/// Loads a student weight file (`.safetensors`) and stores a new handle in `*out_model`.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out_model` must be NULL or valid for a
/// pointer-sized write.
#[no_mangle]
pub unsafe extern "C" fn bf_model_load(
    path: *const c_char,
    out_model: *mut *mut BfModel,
) -> BfStatus {
    guard(|| {
        check_ptr(out_model.cast_const(), "out_model")?;
        // SAFETY: non-null, aligned, and by contract valid for a pointer write. Cleared
        // first so that a failed load never leaves a stale handle in the caller's variable.
        unsafe { *out_model = std::ptr::null_mut() };
        if path.is_null() {
            return Err(Failure::null("path"));
        }
        // SAFETY: non-null and NUL-terminated by contract; read only during this call.
        let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
        let path = path_from_bytes(bytes)?;
        let params = StudentParams::load(&path)?;
        let parameter_count = params.parameter_count();
        let net = params.fold()?;
        let kernels = cpu::kernels()?;
        let model = Arc::new(LoadedModel {
            net,
            kernels,
            parameter_count,
        });
        let handle = loop {
            let id = NEXT_HANDLE
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(HANDLE_SCRAMBLE);
            // 0 would read as NULL. It, and reuse, only come after 2^64 loads (2^32 on 32-bit).
            if id != 0 {
                break id;
            }
        };
        registry().insert(handle, model);
        // SAFETY: checked non-null and aligned above, valid for a pointer write by contract.
        unsafe { *out_model = handle as *mut BfModel };
        Ok(())
    })
}

#[cfg(unix)]
fn path_from_bytes(bytes: &[u8]) -> Result<PathBuf, Failure> {
    use std::os::unix::ffi::OsStrExt;
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
}

#[cfg(not(unix))]
fn path_from_bytes(bytes: &[u8]) -> Result<PathBuf, Failure> {
    std::str::from_utf8(bytes)
        .map(PathBuf::from)
        .map_err(|_| Failure::invalid("path is not valid UTF-8"))
}

/// Fills `*out_info` with the model's input size, embedding size, parameter count,
/// threshold and normalisation.
///
/// # Safety
/// `out_info` must be NULL or valid for a write of one `BfModelInfo`.
#[no_mangle]
pub unsafe extern "C" fn bf_model_info(
    model: *const BfModel,
    out_info: *mut BfModelInfo,
) -> BfStatus {
    guard(|| {
        let m = lookup(model)?;
        check_ptr(out_info.cast_const(), "out_info")?;
        let info = &m.net.info;
        let filled = BfModelInfo {
            resolution: info.resolution as u32,
            embedding_size: info.embedding_size as u32,
            parameter_count: m.parameter_count as u64,
            threshold: info.threshold,
            mean: info.normalization.mean,
            std: info.normalization.std,
        };
        // SAFETY: non-null, aligned, and valid for one write by contract; `write` does not read the
        // (possibly uninitialised) old value.
        unsafe { out_info.write(filled) };
        Ok(())
    })
}

/// Embeds `n` RGB8 images of `height × width`, each resized (area averaging, as the CLI does)
/// to the model's input, into `out[n * embedding_size]`, L2-normalised.
///
/// Image `i` starts at `pixels + i * height * row_stride`; each row is `width * 3` bytes of
/// R, G, B, followed by padding up to `row_stride`. `out` is written only on success.
///
/// # Safety
/// `pixels` must be NULL or readable for `(n * height - 1) * row_stride + width * 3` bytes; `out` must be NULL or
/// writable for `n * embedding_size` floats.
#[no_mangle]
pub unsafe extern "C" fn bf_embed_rgb8(
    model: *const BfModel,
    pixels: *const u8,
    n: usize,
    height: usize,
    width: usize,
    row_stride: usize,
    out: *mut f32,
) -> BfStatus {
    guard(|| {
        let m = lookup(model)?;
        check_ptr(pixels, "pixels")?;
        check_ptr(out.cast_const(), "out")?;
        if n == 0 {
            return Err(Failure::invalid("n is 0: there are no images to embed"));
        }
        if width == 0 || height == 0 {
            return Err(Failure::invalid(format!(
                "image size {width}×{height} is empty"
            )));
        }
        let row_bytes = checked_len(&[width, 3], 1, "image row")?;
        if row_stride < row_bytes {
            return Err(Failure::invalid(format!(
                "row_stride {row_stride} is less than width × 3 = {row_bytes}"
            )));
        }
        let image_bytes = checked_len(&[height, row_stride], 1, "image")?;
        // The last row of the last image need not be padded out to the stride, so that a
        // crop of a larger image (stride > width × 3) can be passed without over-reading.
        let total = checked_len(&[n, image_bytes], 1, "pixel buffer")? - row_stride + row_bytes;
        checked_len(&[n, m.net.info.embedding_size], 4, "output")?;
        // SAFETY: non-null, and readable for `total` = (n × height - 1) × row_stride + width × 3
        // bytes by contract; that length was checked to fit a slice (≤ isize::MAX bytes). The
        // slice is only read, and only during this call.
        let all = unsafe { std::slice::from_raw_parts(pixels, total) };
        let images = (0..n)
            .map(|i| {
                let start = i * image_bytes;
                let end = (start + image_bytes).min(total);
                Rgb8::from_strided(width, height, row_stride, &all[start..end])
            })
            .collect::<crate::Result<Vec<_>>>()?;
        let emb = embed_rgb(&m.net, m.kernels, &images)?;
        // SAFETY: `out` is non-null, aligned, and holds n × embedding_size floats by contract.
        unsafe { write_embeddings(&emb, n, m.net.info.embedding_size, out) }?;
        Ok(())
    })
}

/// Embeds `n` already-normalised faces in NCHW f32 layout. The caller states the shape,
/// `[n, channels, height, width]`, which must equal `[n, 3, resolution, resolution]`.
///
/// # Safety
/// `input` must be NULL or readable for `n * channels * height * width` floats; `out` must be
/// NULL or writable for `n * embedding_size` floats.
#[no_mangle]
pub unsafe extern "C" fn bf_embed_f32(
    model: *const BfModel,
    input: *const f32,
    n: usize,
    channels: usize,
    height: usize,
    width: usize,
    out: *mut f32,
) -> BfStatus {
    guard(|| {
        let m = lookup(model)?;
        check_ptr(input, "input")?;
        check_ptr(out.cast_const(), "out")?;
        if n == 0 {
            return Err(Failure::invalid("n is 0: there are no faces to embed"));
        }
        let r = m.net.resolution();
        if (channels, height, width) != (3, r, r) {
            return Err(Failure::invalid(format!(
                "input is [n, {channels}, {height}, {width}] but this model takes [n, 3, {r}, {r}]"
            )));
        }
        let len = checked_len(&[n, 3, r, r], 4, "input")?;
        checked_len(&[n, m.net.info.embedding_size], 4, "output")?;
        // SAFETY: non-null, aligned, and readable for n × 3 × r × r floats by contract (the caller
        // stated that shape and it equals the model's); the length fits a slice.
        let data = unsafe { std::slice::from_raw_parts(input, len) };
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Failure::invalid("input holds NaN or infinite values"));
        }
        let x = Tensor::new(&[n, 3, r, r], data.to_vec())?;
        let emb = m.net.forward(m.kernels, &x)?;
        // SAFETY: `out` is non-null, aligned, and holds n × embedding_size floats by contract.
        unsafe { write_embeddings(&emb, n, m.net.info.embedding_size, out) }?;
        Ok(())
    })
}

/// Cosine similarity of two vectors of `len` floats, into `*out_similarity` (0 when either
/// vector is all zeros). For embeddings from this library it is their dot product.
///
/// # Safety
/// `a` and `b` must be NULL or readable for `len` floats; `out_similarity` must be NULL or
/// writable for one float.
#[no_mangle]
pub unsafe extern "C" fn bf_similarity(
    a: *const f32,
    b: *const f32,
    len: usize,
    out_similarity: *mut f32,
) -> BfStatus {
    guard(|| {
        check_ptr(a, "a")?;
        check_ptr(b, "b")?;
        check_ptr(out_similarity.cast_const(), "out_similarity")?;
        if len == 0 {
            return Err(Failure::invalid("len is 0: nothing to compare"));
        }
        checked_len(&[len], 4, "vector")?;
        // SAFETY: both non-null, aligned, and readable for `len` floats by contract; the length fits a
        // slice; they are only read, so they may alias each other.
        let (va, vb) = unsafe {
            (
                std::slice::from_raw_parts(a, len),
                std::slice::from_raw_parts(b, len),
            )
        };
        let cos = ops::cosine(va, vb)?;
        // SAFETY: non-null, aligned, and writable for one float by contract.
        unsafe { out_similarity.write(cos) };
        Ok(())
    })
}

/// Frees a model. The handle is dead afterwards: any later use, a second free included,
/// returns `BF_ERR_INVALID_HANDLE`. Freeing NULL returns `BF_ERR_NULL_POINTER` (harmless to
/// ignore). Calls already running on other threads with this model finish normally.
#[no_mangle]
pub extern "C" fn bf_model_free(model: *mut BfModel) -> BfStatus {
    guard(|| {
        if model.is_null() {
            return Err(Failure::null("model"));
        }
        // Take the model out under the lock but drop it after releasing the lock.
        let removed = registry().remove(&(model as usize));
        match removed {
            Some(m) => {
                drop(m);
                Ok(())
            }
            None => Err(Failure::new(
                BfStatus::InvalidHandle,
                format!("model handle {model:p} is not a live model (already freed, or never returned by bf_model_load)"),
            )),
        }
    })
}

/// The message of the last failed `bf_*` call on this thread, or "" if that call succeeded.
/// Never NULL. The string stays valid until the next `bf_*` call on this thread.
#[no_mangle]
pub extern "C" fn bf_last_error() -> *const c_char {
    // Nothing here can panic (the RefCell is never borrowed mutably across a call), but the
    // rule is catch_unwind on every entry point; `try_with` fails only during thread teardown.
    panic::catch_unwind(|| LAST_ERROR.try_with(|e| e.borrow().as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// The library version, e.g. "0.1.0". Never NULL; static.
#[no_mangle]
pub extern "C" fn bf_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> String {
        // SAFETY: bf_last_error never returns NULL; the string is copied at once.
        unsafe { CStr::from_ptr(bf_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_and_the_library_stays_usable() {
        let s = guard(|| panic!("boom at the boundary"));
        assert_eq!(s, BfStatus::Internal);
        assert!(message().contains("boom at the boundary"), "{}", message());
        // A panic while the registry lock is held poisons it; later calls must still work.
        let s = guard(|| {
            let _held = registry();
            panic!("{}", String::from("panic holding the lock"))
        });
        assert_eq!(s, BfStatus::Internal);
        assert!(message().contains("panic holding the lock"));
        assert!(MODELS.is_poisoned());
        let s = guard(|| lookup(12345usize as *const BfModel).map(|_| ()));
        assert_eq!(s, BfStatus::InvalidHandle);
        assert_eq!(guard(|| Ok(())), BfStatus::Ok);
        assert_eq!(message(), "");
    }

    #[test]
    fn messages_with_nul_bytes_survive() {
        let s = guard(|| Err(Failure::invalid("a\0b")));
        assert_eq!(s, BfStatus::InvalidArgument);
        assert_eq!(message(), "a\\0b");
    }
}
