//! The CUDA kernel sources (`kernels/*.cu`, embedded) and their NVRTC compilation to CUBIN for
//! one GPU architecture, cached once per process. It loads nothing onto a device.

use super::nvrtc_present;
use crate::error::{Error, Result};
use cudarc::nvrtc::{result, sys};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, OnceLock};

/// Prepended to every kernel file: storage types and f16 conversion (NVRTC has no include path).
pub const PRELUDE: &str = include_str!("../../kernels/prelude.cuh");

/// One kernel file and the entry points it defines.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub file: &'static str,
    pub source: &'static str,
    pub entry_points: &'static [&'static str],
}

/// Every kernel file. Inference entry points exist as `_f32` and `_f16` (f16 storage, f32
/// accumulation), the tensor-core ones as `_f16` only, the training ones (train.cu) as `_f32`.
pub const SOURCES: [KernelSource; 6] = [
    KernelSource {
        file: "conv3x3.cu",
        source: include_str!("../../kernels/conv3x3.cu"),
        entry_points: &[
            "conv3x3_bias_prelu_f32",
            "conv3x3_bias_prelu_f16",
            "conv3x3_smem_f32",
            "conv3x3_smem_f16",
            "conv3x3_smem2_f32",
            "conv3x3_smem2_f16",
        ],
    },
    KernelSource {
        file: "depthwise.cu",
        source: include_str!("../../kernels/depthwise.cu"),
        entry_points: &[
            "depthwise3x3_bias_prelu_f32",
            "depthwise3x3_bias_prelu_f16",
            "depthwise3x3_tile_f32",
            "depthwise3x3_tile_f16",
        ],
    },
    KernelSource {
        file: "pointwise.cu",
        source: include_str!("../../kernels/pointwise.cu"),
        entry_points: &[
            "pointwise_bias_prelu_f32",
            "pointwise_bias_prelu_f16",
            "dwpw_bias_prelu_f32",
            "dwpw_bias_prelu_f16",
            "pointwise_mma_f16",
            "dwpw_mma_f16",
            "pointwise_mma2_f16",
        ],
    },
    KernelSource {
        file: "head.cu",
        source: include_str!("../../kernels/head.cu"),
        entry_points: &["gdc_bias_f32", "gdc_bias_f16", "l2_rows_f32", "l2_rows_f16"],
    },
    KernelSource {
        file: "graph.cu",
        source: include_str!("../../kernels/graph.cu"),
        entry_points: &[
            "graph_conv_f32",
            "graph_conv_f16",
            "graph_affine_prelu_f32",
            "graph_affine_prelu_f16",
            "graph_add_f32",
            "graph_add_f16",
            "graph_linear_splitk_f32",
            "graph_linear_splitk_f16",
            "graph_linear_reduce_f32",
            "graph_linear_reduce_f16",
        ],
    },
    KernelSource {
        file: "train.cu",
        source: include_str!("../../kernels/train.cu"),
        entry_points: &[
            "bn_stats_f32",
            "bn_prelu_forward_f32",
            "bn_prelu_backward_sums_f32",
            "bn_prelu_backward_dx_f32",
            "add_inplace_f32",
            "depthwise_backward_data_f32",
            "conv3x3_backward_weight_f32",
            "pointwise_backward_weight_partial_f32",
            "sum_partials_f32",
            "gdc_forward_f32",
            "gdc_backward_f32",
            "linear_forward_f32",
            "linear_backward_data_f32",
            "linear_backward_weight_f32",
        ],
    },
];

impl KernelSource {
    /// The translation unit handed to NVRTC: the prelude, then the file.
    pub fn translation_unit(&self) -> String {
        format!("{PRELUDE}\n#line 1 \"{}\"\n{}", self.file, self.source)
    }
}

/// The NVRTC architecture name for a compute capability, e.g. (9, 0) → `sm_90`.
pub fn arch_name(cc: (i32, i32)) -> String {
    format!("sm_{}{}", cc.0, cc.1)
}

/// NVRTC's version, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    nvrtc_present()?;
    super::guard("nvrtcVersion", || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two valid out-pointers; libnvrtc is loadable (checked above).
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| Error::Cuda(format!("nvrtcVersion: {e:?}")))?;
        Ok((major, minor))
    })
}

/// Compiles one kernel file to a CUBIN for `arch` (`sm_XY`). A compile error carries NVRTC's log.
///
/// CUBIN rather than PTX: a PTX made by a newer NVRTC than the driver cannot be JIT-loaded,
/// while a CUBIN from any CUDA 13.x NVRTC loads on any CUDA 13 driver.
pub fn compile_cubin(k: &KernelSource, arch: &str) -> Result<Vec<u8>> {
    nvrtc_present()?;
    let src = CString::new(k.translation_unit())
        .map_err(|_| Error::Cuda(format!("{} contains a NUL byte", k.file)))?;
    let name = CString::new(k.file).map_err(|_| Error::Cuda("bad kernel file name".into()))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    let err = |what: &str, e: result::NvrtcError| Error::Cuda(format!("{} {what}: {e:?}", k.file));
    super::guard("NVRTC compile", || {
        let prog = result::create_program(&src, Some(&name)).map_err(|e| err("create", e))?;
        // SAFETY: `prog` is a live program from create_program; it is destroyed exactly once below.
        let compiled = unsafe { result::compile_program(prog, &opts) };
        let out = match compiled {
            Err(e) => {
                // SAFETY: `prog` is live; the log is a NUL-terminated buffer NVRTC filled.
                let log = unsafe { result::get_program_log(prog) }
                    .ok()
                    .map(|l| {
                        // SAFETY: get_program_log returns a NUL-terminated C string.
                        unsafe { CStr::from_ptr(l.as_ptr()) }
                            .to_string_lossy()
                            .into_owned()
                    })
                    .unwrap_or_default();
                Err(Error::Cuda(format!(
                    "NVRTC failed to compile {} for {arch} ({e:?}): {}",
                    k.file,
                    log.trim().replace('\n', " | ")
                )))
            }
            Ok(()) => {
                let mut size = 0usize;
                // SAFETY: `prog` compiled successfully; `size` is a valid out-pointer.
                unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
                    .result()
                    .map_err(|e| err("cubin size", e))?;
                let mut cubin = vec![0u8; size];
                // SAFETY: `cubin` has exactly the `size` bytes NVRTC asked for.
                unsafe { sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) }
                    .result()
                    .map_err(|e| err("get cubin", e))?;
                Ok(cubin)
            }
        };
        // SAFETY: destroys the program created above, once; nothing uses it afterwards.
        unsafe { result::destroy_program(prog) }.map_err(|e| err("destroy", e))?;
        out
    })
}

type CubinCache = Mutex<HashMap<String, Arc<Vec<Vec<u8>>>>>;
static CUBINS: OnceLock<CubinCache> = OnceLock::new();

/// Every kernel file compiled for `arch`, in `SOURCES` order; compiled once per process.
pub fn cubins_for(arch: &str) -> Result<Arc<Vec<Vec<u8>>>> {
    let cache = CUBINS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache
        .lock()
        .map_err(|_| Error::Cuda("kernel cache poisoned by an earlier failure".into()))?;
    if let Some(c) = map.get(arch) {
        return Ok(c.clone());
    }
    let compiled = SOURCES
        .iter()
        .map(|k| compile_cubin(k, arch))
        .collect::<Result<Vec<_>>>()?;
    let compiled = Arc::new(compiled);
    map.insert(arch.to_string(), compiled.clone());
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI has no GPU: these compile every kernel file for a Hopper target with the real NVRTC.
    /// They fail (never skip) when libnvrtc.so.13 is absent, since CI installs it.
    fn require_nvrtc() {
        if let Err(e) = nvrtc_present() {
            panic!("NVRTC compile tests need libnvrtc.so.13 on LD_LIBRARY_PATH: {e}");
        }
    }

    #[test]
    fn nvrtc_compiles_every_kernel_file_for_sm90() {
        require_nvrtc();
        for k in &SOURCES {
            let cubin = compile_cubin(k, "sm_90").unwrap_or_else(|e| panic!("{e}"));
            // An ELF image that names every entry point the host launches.
            assert_eq!(&cubin[..4], b"\x7fELF", "{} did not give a CUBIN", k.file);
            for ep in k.entry_points {
                assert!(
                    cubin.windows(ep.len()).any(|w| w == ep.as_bytes()),
                    "{}: entry point {ep} missing from the CUBIN",
                    k.file
                );
            }
        }
    }

    #[test]
    fn nvrtc_compiles_for_other_architectures_and_caches() {
        require_nvrtc();
        let v = nvrtc_version().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.0, 13, "expected CUDA 13 NVRTC, got {v:?}");
        // Another architecture than the sm_90 above (Ampere), since the arch comes from the
        // device at run time. One is enough to show that; each costs CI seconds.
        let arch = "sm_80";
        let a = cubins_for(arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.len(), SOURCES.len());
        let b = cubins_for(arch).unwrap_or_else(|e| panic!("{e}"));
        assert!(Arc::ptr_eq(&a, &b), "second request for {arch} recompiled");
    }

    #[test]
    fn nvrtc_reports_a_broken_kernel_with_its_log() {
        require_nvrtc();
        let broken = KernelSource {
            file: "broken.cu",
            source: "extern \"C\" __global__ void k(float* y) { y[0] = undefined_name; }",
            entry_points: &["k"],
        };
        let msg = compile_cubin(&broken, "sm_90")
            .expect_err("a kernel that does not compile must be an error")
            .to_string();
        assert!(
            msg.contains("broken.cu") && msg.contains("undefined_name"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "error must be one line: {msg}");
    }
}
