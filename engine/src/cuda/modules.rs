//! The PTX modules of the engine, loaded into a context and looked up by entry name.
//!
//! The PTX is embedded at build time (engine/build.rs from the committed `ptx/<arch>/*.ptx`). The
//! set is chosen by compute capability: `sm_90a` (wgmma/TMA allowed) for 9.x, `sm_80` for every
//! other GPU from Ampere on (the driver JIT-compiles it for the device); older GPUs are refused.
//! Setting `ROOFLAB_PTX_DIR` loads `DIR/<arch>/<module>.ptx` (or `DIR/<module>.ptx`) instead, so
//! a kernel can be swapped on the GPU machine without rebuilding Rust; modules it lacks still come
//! from the embedded set, and [`ModuleRegistry::describe`] says which came from where.
//!
//! A module the driver will not load (its JIT rejects an instruction, a register limit, a PTX ISA
//! too new for the driver) fails with one line that carries the first lines of the JIT's log. The
//! JIT takes tens of ms per module (less when the driver's JIT cache has it), all in
//! [`ModuleRegistry::load`], which records each module's load time so it stays out of timings.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys::{self, CUjit_option, CUresult};
use cudarc::driver::{result as driver_result, CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;

use super::{drop_reporting, CudaResultExt, GpuContext};
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

impl PtxSource {
    /// "embedded sm_90a" or "DIR/sm_90a/layers.ptx from ROOFLAB_PTX_DIR".
    pub fn origin(&self, arch: &str) -> String {
        match self {
            PtxSource::Embedded => format!("embedded {arch}"),
            PtxSource::File(path) => format!("{} from {PTX_DIR_ENV}", path.display()),
        }
    }
}

/// A module in the registry: where its PTX came from and how long the driver took to load it.
struct LoadedModule {
    module: Arc<CudaModule>,
    source: PtxSource,
    load_time: Duration,
}

/// Loaded modules and the functions looked up in them.
pub struct ModuleRegistry {
    arch: &'static str,
    ctx: Arc<CudaContext>,
    modules: HashMap<String, LoadedModule>,
    functions: HashMap<(String, String), CudaFunction>,
}

impl ModuleRegistry {
    /// Loads every module named in `entries` and looks up each `(module, entry)` function, so that
    /// PTX JIT and missing-kernel errors happen here, not in the middle of a forward pass.
    pub fn load<'a>(gpu: &GpuContext, entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let arch = ptx_arch_for(gpu.compute_capability())?;
        // An error left by an earlier drop would otherwise fail the first load under its name.
        gpu.check_deferred()?;
        let mut registry =
            ModuleRegistry { arch, ctx: gpu.ctx().clone(), modules: HashMap::new(), functions: HashMap::new() };
        for (module, entry) in entries {
            if !registry.modules.contains_key(module) {
                let (text, source) = find_ptx(arch, module)?;
                let loaded = load_module(gpu.ctx(), module, text, source, arch)?;
                registry.modules.insert(module.to_string(), loaded);
            }
            let key = (module.to_string(), entry.to_string());
            if !registry.functions.contains_key(&key) {
                let loaded = &registry.modules[module];
                let f = loaded
                    .module
                    .load_function(entry)
                    .cuda(&format!("kernel `{entry}` in PTX module `{module}` ({})", loaded.source.origin(arch)))?;
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

    /// How long the driver took to load `module` (mostly the PTX JIT), if it was loaded.
    pub fn load_time(&self, module: &str) -> Option<Duration> {
        self.modules.get(module).map(|loaded| loaded.load_time)
    }

    /// Time spent loading all modules: startup cost, never part of a kernel timing.
    pub fn total_load_time(&self) -> Duration {
        self.modules.values().map(|loaded| loaded.load_time).sum()
    }

    /// One line per module: its name, where its PTX came from and how long it took to load.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .modules
            .iter()
            .map(|(name, loaded)| {
                let ms = loaded.load_time.as_secs_f64() * 1e3;
                format!("{name}: {}, loaded in {ms:.1} ms", loaded.source.origin(self.arch))
            })
            .collect();
        lines.sort();
        lines.join("\n")
    }
}

impl Drop for ModuleRegistry {
    /// Unloads the modules (unless a function is still held elsewhere), reporting an unload error.
    fn drop(&mut self) {
        let loaded = (std::mem::take(&mut self.functions), std::mem::take(&mut self.modules));
        drop_reporting(&self.ctx, "the PTX modules", loaded);
    }
}

/// Bytes of each JIT log buffer (the driver cuts a longer log), and how much of the error log a
/// load error keeps: its first lines, each cut to a length.
const JIT_LOG_BYTES: usize = 16 << 10;
const JIT_LOG_LINES: usize = 4;
const JIT_LOG_LINE_CHARS: usize = 240;

/// Loads `text` (the PTX of `module`) with cudarc, timing it; a failure gets the JIT's log.
fn load_module(
    ctx: &Arc<CudaContext>,
    module: &str,
    text: String,
    source: PtxSource,
    arch: &str,
) -> Result<LoadedModule> {
    let origin = source.origin(arch);
    if text.contains('\0') {
        // cudarc would panic making a C string of it.
        return Err(Error::Invalid(format!("PTX module `{module}` ({origin}) contains a NUL byte")));
    }
    let started = Instant::now();
    match ctx.load_module(Ptx::from_src(text.as_str())) {
        Ok(loaded) => Ok(LoadedModule { module: loaded, source, load_time: started.elapsed() }),
        Err(e) => Err(Error::Cuda(load_error_line(module, &origin, &e.to_string(), jit_logs(ctx, &text)))),
    }
}

/// The JIT's (error log, info log) for `ptx`, from loading it again with cuModuleLoadDataEx.
/// cudarc's `load_module` passes no JIT options and its `CudaModule` cannot wrap a module loaded
/// any other way, so the normal load stays on cudarc and only a failed load pays a second JIT.
fn jit_logs(ctx: &CudaContext, ptx: &str) -> std::result::Result<(String, String), String> {
    let ptx = CString::new(ptx).map_err(|_| "the PTX contains a NUL byte".to_string())?;
    ctx.bind_to_thread().map_err(|e| format!("binding the context: {e}"))?;
    let mut error_log = vec![0u8; JIT_LOG_BYTES];
    let mut info_log = vec![0u8; JIT_LOG_BYTES];
    let mut options = [
        CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        CUjit_option::CU_JIT_INFO_LOG_BUFFER,
        CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
    ];
    // The driver API passes a buffer's size by value in the option's pointer-sized slot.
    let mut values: [*mut c_void; 4] = [
        error_log.as_mut_ptr().cast(),
        std::ptr::without_provenance_mut(JIT_LOG_BYTES),
        info_log.as_mut_ptr().cast(),
        std::ptr::without_provenance_mut(JIT_LOG_BYTES),
    ];
    let mut module: sys::CUmodule = std::ptr::null_mut();
    // SAFETY: `ptx` is NUL-terminated; both buffers outlive the call and their sizes are given; the
    // driver writes only into them, into `values` and into `module`.
    let status = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            ptx.as_ptr().cast(),
            options.len() as u32,
            options.as_mut_ptr(),
            values.as_mut_ptr(),
        )
    };
    if status == CUresult::CUDA_SUCCESS {
        // Unloaded at once, any error kept for the next checked call.
        // SAFETY: loaded just above and unloaded once.
        ctx.record_err(unsafe { driver_result::module::unload(module) });
        return Err("a second load worked, so the first failure was not the JIT's".into());
    }
    Ok((log_text(&error_log), log_text(&info_log)))
}

/// The NUL-terminated text the driver wrote into a log buffer.
fn log_text(buffer: &[u8]) -> String {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// The one-line error for a module the driver would not load: the module, where its PTX came
/// from, the driver's error, and the first lines of the JIT error log (or of the info log when
/// the error log is empty).
fn load_error_line(
    module: &str,
    origin: &str,
    driver_error: &str,
    logs: std::result::Result<(String, String), String>,
) -> String {
    let log = match logs {
        Ok((error_log, _)) if !error_log.trim().is_empty() => format!("JIT error log: {}", first_lines(&error_log)),
        Ok((_, info_log)) if !info_log.trim().is_empty() => format!("JIT info log: {}", first_lines(&info_log)),
        Ok(_) => "the JIT wrote no log".to_string(),
        Err(why) => format!("no JIT log ({why})"),
    };
    format!("loading PTX module `{module}` ({origin}): {driver_error}; {log}")
}

/// The first non-blank lines of `log`, trimmed and cut to length, joined with " | ", then how
/// many lines were left out.
fn first_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let mut kept: Vec<String> = lines.iter().take(JIT_LOG_LINES).map(|line| cut(line, JIT_LOG_LINE_CHARS)).collect();
    if lines.len() > JIT_LOG_LINES {
        kept.push(format!("(+{} more lines)", lines.len() - JIT_LOG_LINES));
    }
    kept.join(" | ")
}

/// `line`, cut to `max` characters with "..." when longer.
fn cut(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
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
    fn a_load_error_is_one_line_with_the_origin_and_the_first_lines_of_the_jit_log() {
        let log = "ptxas application ptx input, line 12; error   : Unknown modifier '.foo'\n\n\
                   ptxas application ptx input, line 40; error   : Arguments mismatch\n\
                   ptxas fatal   : Ptx assembly aborted due to errors\n";
        let origin = PtxSource::File(PathBuf::from("/tmp/ptx/sm_90a/layers.ptx")).origin("sm_90a");
        let line = load_error_line("layers", &origin, "CUDA_ERROR_INVALID_PTX", Ok((log.into(), String::new())));
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("loading PTX module `layers` (/tmp/ptx/sm_90a/layers.ptx from ROOFLAB_PTX_DIR)"));
        assert!(line.contains(": CUDA_ERROR_INVALID_PTX; JIT error log: ptxas application ptx input, line 12;"));
        assert!(line
            .ends_with("line 40; error   : Arguments mismatch | ptxas fatal   : Ptx assembly aborted due to errors"));
    }

    #[test]
    fn a_load_error_falls_back_to_the_info_log_then_says_why_there_is_none() {
        let embedded = PtxSource::Embedded.origin("sm_80");
        let info = Ok(("  \n".to_string(), "ptxas info    : 0 bytes gmem".to_string()));
        let line = load_error_line("gemv", &embedded, "E", info);
        assert_eq!(line, "loading PTX module `gemv` (embedded sm_80): E; JIT info log: ptxas info    : 0 bytes gmem");
        assert!(load_error_line("gemv", &embedded, "E", Ok(Default::default())).ends_with("; the JIT wrote no log"));
        let unbound = load_error_line("gemv", &embedded, "E", Err("binding the context: X".into()));
        assert!(unbound.ends_with("; no JIT log (binding the context: X)"), "{unbound}");
    }

    #[test]
    fn a_long_jit_log_is_cut_to_its_first_lines_and_each_line_to_a_length() {
        let log: String = (0..10).map(|i| format!("error {i}: {}\n", "é".repeat(500))).collect();
        let kept = first_lines(&log);
        assert_eq!(kept.matches(" | ").count(), JIT_LOG_LINES);
        assert!(kept.starts_with("error 0: é") && !kept.contains("error 4"), "{kept}");
        assert!(kept.ends_with("(+6 more lines)"), "{kept}");
        let first = kept.split(" | ").next().unwrap();
        assert_eq!(first.chars().count(), JIT_LOG_LINE_CHARS + "...".len());
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("exactly", 7), "exactly");
    }

    #[test]
    fn a_log_buffer_is_read_up_to_its_nul() {
        let mut buffer = b"ptxas error".to_vec();
        buffer.extend([0, b'x', 0]);
        assert_eq!(log_text(&buffer), "ptxas error");
        assert_eq!(log_text(b"no nul"), "no nul");
        assert_eq!(log_text(&[0; 8]), "");
    }

    #[test]
    fn both_sets_embed_the_engine_modules() {
        for arch in ["sm_90a", "sm_80"] {
            for module in ["layers", "gemv", "decode_fused", "attention_decode", "attention_prefill", "layout_probe"] {
                let text = embedded_ptx(arch, module).unwrap_or_else(|| panic!("{arch}/{module} not embedded"));
                assert!(text.contains(".entry"), "{arch}/{module} has no kernel");
            }
        }
    }
}
