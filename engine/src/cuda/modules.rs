//! The PTX modules of the engine, loaded into a context and looked up by entry name.
//!
//! The PTX is embedded at build time (engine/build.rs from the committed `ptx/<arch>/*.ptx`). The
//! set is chosen by compute capability: `sm_90a` (wgmma/TMA allowed) for 9.x, `sm_80` for every
//! other GPU from Ampere on (the driver JIT-compiles it for the device); older GPUs are refused.
//! Setting `ROOFLAB_PTX_DIR` loads `DIR/<arch>/<module>.ptx` (or `DIR/<module>.ptx`) instead, so
//! a kernel can be swapped on the GPU machine without rebuilding Rust; modules it lacks still come
//! from the embedded set, and [`ModuleRegistry::describe`] says which came from where.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::{CudaResultExt, GpuContext};
use crate::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/embedded_ptx.rs"));

/// Environment variable naming a folder of PTX files that replace the embedded ones.
pub const PTX_DIR_ENV: &str = "ROOFLAB_PTX_DIR";

/// The PTX set (folder under `ptx/`) for a compute capability.
pub fn ptx_arch_for(compute_capability: (u32, u32)) -> Result<&'static str> {
    match compute_capability {
        (9, _) => Ok("sm_90a"),
        (major, _) if major >= 8 => Ok("sm_80"),
        (major, minor) => Err(Error::Unsupported(format!(
            "GPU of compute capability {major}.{minor}: rooflab's kernels need 8.0 (Ampere) or newer"
        ))),
    }
}

/// The embedded PTX text of `module` for `arch`, if the build embedded it.
pub fn embedded_ptx(arch: &str, module: &str) -> Option<&'static str> {
    EMBEDDED_PTX.iter().find(|(a, m, _)| *a == arch && *m == module).map(|(_, _, text)| *text)
}

/// Names of the embedded modules of `arch`.
pub fn embedded_modules(arch: &str) -> Vec<&'static str> {
    EMBEDDED_PTX.iter().filter(|(a, _, _)| *a == arch).map(|(_, m, _)| *m).collect()
}

/// Where a loaded module's PTX came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtxSource {
    Embedded,
    File(PathBuf),
}

/// Loaded modules and the functions looked up in them.
pub struct ModuleRegistry {
    arch: &'static str,
    modules: HashMap<String, (Arc<CudaModule>, PtxSource)>,
    functions: HashMap<(String, String), CudaFunction>,
}

impl ModuleRegistry {
    /// Loads every module named in `entries` and looks up each `(module, entry)` function, so that
    /// PTX JIT and missing-kernel errors happen here, not in the middle of a forward pass.
    pub fn load<'a>(gpu: &GpuContext, entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let arch = ptx_arch_for(gpu.compute_capability())?;
        let mut registry = ModuleRegistry { arch, modules: HashMap::new(), functions: HashMap::new() };
        for (module, entry) in entries {
            if !registry.modules.contains_key(module) {
                let (text, source) = find_ptx(arch, module)?;
                if text.contains('\0') {
                    return Err(Error::Invalid(format!("PTX module `{module}` ({source:?}) contains a NUL byte")));
                }
                let loaded = gpu
                    .ctx()
                    .load_module(Ptx::from_src(text))
                    .cuda(&format!("loading PTX module `{module}` ({arch}, {source:?})"))?;
                registry.modules.insert(module.to_string(), (loaded, source));
            }
            let key = (module.to_string(), entry.to_string());
            if !registry.functions.contains_key(&key) {
                let f = registry.modules[module]
                    .0
                    .load_function(entry)
                    .cuda(&format!("kernel `{entry}` in PTX module `{module}` ({arch})"))?;
                registry.functions.insert(key, f);
            }
        }
        Ok(registry)
    }

    /// The PTX set in use (`sm_90a` or `sm_80`).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// A function loaded by [`ModuleRegistry::load`].
    pub fn function(&self, module: &str, entry: &str) -> Result<&CudaFunction> {
        self.functions
            .get(&(module.to_string(), entry.to_string()))
            .ok_or_else(|| Error::Invalid(format!("kernel `{entry}` of module `{module}` was not loaded")))
    }

    /// One line per module: its name and where its PTX came from.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .modules
            .iter()
            .map(|(name, (_, source))| match source {
                PtxSource::Embedded => format!("{name}: embedded {}", self.arch),
                PtxSource::File(path) => format!("{name}: {}", path.display()),
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

/// PTX text of `module`: from `$ROOFLAB_PTX_DIR` when it has the file, else the embedded copy.
fn find_ptx(arch: &str, module: &str) -> Result<(String, PtxSource)> {
    if let Some(dir) = std::env::var_os(PTX_DIR_ENV).map(PathBuf::from) {
        for path in [dir.join(arch).join(format!("{module}.ptx")), dir.join(format!("{module}.ptx"))] {
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                return Ok((text, PtxSource::File(path)));
            }
        }
    }
    match embedded_ptx(arch, module) {
        Some(text) => Ok((text.to_string(), PtxSource::Embedded)),
        None => Err(Error::Unsupported(format!(
            "no PTX module `{module}` for {arch} (embedded: {:?}); run scripts/build-ptx and rebuild",
            embedded_modules(arch)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_follows_compute_capability() {
        assert_eq!(ptx_arch_for((9, 0)).unwrap(), "sm_90a");
        assert_eq!(ptx_arch_for((8, 6)).unwrap(), "sm_80");
        assert_eq!(ptx_arch_for((12, 0)).unwrap(), "sm_80");
        assert!(ptx_arch_for((7, 5)).unwrap_err().to_string().contains("7.5"));
    }

    #[test]
    fn both_sets_embed_the_engine_modules() {
        for arch in ["sm_90a", "sm_80"] {
            for module in ["layers", "gemv", "attention_decode", "attention_prefill"] {
                let text = embedded_ptx(arch, module).unwrap_or_else(|| panic!("{arch}/{module} not embedded"));
                assert!(text.contains(".entry"), "{arch}/{module} has no kernel");
            }
        }
    }
}
