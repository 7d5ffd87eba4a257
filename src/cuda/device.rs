//! One CUDA device: its context and stream, and the kernels loaded for its architecture.
//! It owns no model weights; opening it never panics when CUDA or a GPU is absent.

use super::compile::{arch_name, cubins_for, SOURCES};
use super::{driver_err, driver_present, guard, nvrtc_present};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::Arc;

/// An opened GPU with every kernel of `kernels/` loaded.
pub struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
    pub ordinal: usize,
    pub name: String,
    pub arch: String,
    /// Compute capability (major, minor).
    pub compute: (i32, i32),
}

/// How many CUDA devices the driver sees (0 when there is no driver or no GPU).
pub fn device_count() -> usize {
    if driver_present().is_err() {
        return 0;
    }
    guard("device count", || {
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(driver_err("cuDeviceGetCount"))
    })
    .unwrap_or(0)
}

impl CudaDevice {
    /// Opens device `ordinal`, compiles (or takes from the cache) the kernels for its
    /// architecture and loads them.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        driver_present()?;
        nvrtc_present()?;
        guard("opening the CUDA device", || {
            let count = CudaContext::device_count().map_err(driver_err(
                "the CUDA driver did not initialise (no usable GPU?)",
            ))?;
            if count <= 0 {
                return Err(Error::Cuda(
                    "no CUDA device is present; run with --device cpu".into(),
                ));
            }
            if ordinal >= count as usize {
                return Err(Error::Cuda(format!(
                    "device cuda:{ordinal} does not exist; this machine has {count} (cuda:0..cuda:{})",
                    count - 1
                )));
            }
            let ctx = CudaContext::new(ordinal).map_err(driver_err("creating the context"))?;
            // Every buffer of this crate lives on the one stream below, and the few cross-stream
            // hand-offs (the copy stream of `CudaStudent::forward`) use explicit events. cudarc's
            // per-buffer event tracking would also record events inside CUDA-graph capture, so
            // it is turned off before the first allocation.
            // SAFETY: nothing has been allocated in this context yet; synchronisation between
            // streams is then ours, and every cross-stream use in this crate waits on an event.
            unsafe { ctx.disable_event_tracking() };
            let cc = ctx
                .compute_capability()
                .map_err(driver_err("reading the compute capability"))?;
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            let arch = arch_name(cc);
            let cubins = cubins_for(&arch)?;
            let mut functions = HashMap::new();
            let mut modules = Vec::new();
            for (k, cubin) in SOURCES.iter().zip(cubins.iter()) {
                let module = ctx
                    .load_module(Ptx::from_binary(cubin.clone()))
                    .map_err(driver_err(k.file))?;
                for ep in k.entry_points {
                    let f = module.load_function(ep).map_err(driver_err(ep))?;
                    functions.insert(*ep, f);
                }
                modules.push(module);
            }
            // A stream of our own, not the legacy NULL stream: graphs can only be captured on
            // the former.
            let stream = ctx.new_stream().map_err(driver_err("creating a stream"))?;
            Ok(CudaDevice {
                ctx,
                stream,
                functions,
                _modules: modules,
                ordinal,
                name,
                arch,
                compute: cc,
            })
        })
    }

    /// A loaded kernel by entry-point name.
    pub(crate) fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::Cuda(format!("kernel `{name}` is not loaded")))
    }

    /// Whether the f16 `mma.sync` tensor-core kernels can run here (sm_80 or newer).
    pub fn tensor_cores(&self) -> bool {
        self.compute.0 >= 8
    }

    /// Blocks until every queued kernel and copy has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize"))
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}
