//! Rust side of every CUDA kernel: one module per kernel family (shape checks, launch
//! configuration, the launch; nothing else), the [`Kernels`] handle that holds the loaded PTX, and
//! [`ENTRIES`], the ABI table that tests/cpu_abi.rs checks against the committed PTX.
//!
//! Buffers are passed as [`DevSpan`]s and shapes as plain numbers; each wrapper checks that every
//! span holds what the shapes say before it launches, so a wrong size is an [`Error::Invalid`]
//! naming the operand instead of an illegal memory access.

pub mod attention_decode;
pub mod attention_prefill;
pub mod decode_fused;
pub mod gemv;
pub mod layers;
pub mod layout_probe;
pub mod tma;

use cudarc::driver::sys::{self as cu, CUfunction_attribute};
use cudarc::driver::{DeviceRepr, LaunchConfig};

use crate::cuda::{self, CudaResultExt, GpuContext, ModuleRegistry};
use crate::ffi::params::{
    AttnDecodeParams, AttnPrefillParams, AttnPrefillTmaParams, CastParams, DecodeGateUpParams, DecodeQkvParams,
    EmbeddingParams, FillUniformParams, GemmParams, GemvParams, GemvRmsNormParams, KvAppendParams,
    LayoutProbeMmaParams, LayoutProbeTmaParams, ResidualAddParams, RmsNormParams, RopeParams, SiluMulParams,
};
use crate::{Error, Result};
use tma::{RlTensorMap, TensorMap3d};

pub use crate::cuda::DevSpan;

// SAFETY: plain #[repr(C)] structs of integers and floats (bindgen output of params.h), passed by
// value exactly as the kernels declare them; tests/cpu_abi.rs checks size and alignment.
unsafe impl DeviceRepr for EmbeddingParams {}
unsafe impl DeviceRepr for RmsNormParams {}
unsafe impl DeviceRepr for RopeParams {}
unsafe impl DeviceRepr for SiluMulParams {}
unsafe impl DeviceRepr for ResidualAddParams {}
unsafe impl DeviceRepr for CastParams {}
unsafe impl DeviceRepr for KvAppendParams {}
unsafe impl DeviceRepr for FillUniformParams {}
unsafe impl DeviceRepr for GemvParams {}
unsafe impl DeviceRepr for GemmParams {}
unsafe impl DeviceRepr for DecodeQkvParams {}
unsafe impl DeviceRepr for DecodeGateUpParams {}
unsafe impl DeviceRepr for GemvRmsNormParams {}
unsafe impl DeviceRepr for AttnDecodeParams {}
unsafe impl DeviceRepr for AttnPrefillParams {}
unsafe impl DeviceRepr for LayoutProbeMmaParams {}
// SAFETY: as above; the tensor maps are opaque 128-byte, 64-byte aligned blocks (CUtensorMap).
unsafe impl DeviceRepr for AttnPrefillTmaParams {}
unsafe impl DeviceRepr for LayoutProbeTmaParams {}

/// Size and alignment of one by-value kernel parameter, as the Rust type has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamAbi {
    pub size: usize,
    pub align: usize,
}

/// A kernel the Rust side launches: its PTX module (file stem), entry name and parameters.
#[derive(Debug, Clone, Copy)]
pub struct KernelAbi {
    pub module: &'static str,
    pub entry: &'static str,
    pub params: &'static [ParamAbi],
}

const fn abi<T>() -> ParamAbi {
    ParamAbi { size: std::mem::size_of::<T>(), align: std::mem::align_of::<T>() }
}

macro_rules! kernel {
    ($module:literal, $entry:literal, $params:ty) => {
        KernelAbi { module: $module, entry: $entry, params: &[abi::<$params>()] }
    };
}

pub const LAYERS: &str = "layers";
pub const GEMV: &str = "gemv";
pub const DECODE_FUSED: &str = "decode_fused";
pub const ATTENTION_DECODE: &str = "attention_decode";
pub const ATTENTION_PREFILL: &str = "attention_prefill";
pub const LAYOUT_PROBE: &str = "layout_probe";

/// Modules of instruments that tests launch and the model never does: [`Kernels::load`] leaves them out,
/// so a model or a bench does not pay their PTX JIT (about 0.2 s for the layout probes).
pub const INSTRUMENTS: &[&str] = &[LAYOUT_PROBE];

/// Every kernel the engine launches, and the [`INSTRUMENTS`]' kernels, which the tests launch.
pub static ENTRIES: &[KernelAbi] = &[
    kernel!("layers", "embedding_bf16", EmbeddingParams),
    kernel!("layers", "rmsnorm_f32", RmsNormParams),
    kernel!("layers", "rope_f32", RopeParams),
    kernel!("layers", "silu_mul_f32", SiluMulParams),
    kernel!("layers", "residual_add_f32", ResidualAddParams),
    kernel!("layers", "cast_f32_to_bf16", CastParams),
    kernel!("layers", "kv_append_bf16", KvAppendParams),
    kernel!("layers", "fill_uniform_bf16", FillUniformParams),
    kernel!("gemv", "gemv_bf16_naive", GemvParams),
    kernel!("gemv", "gemv_bf16", GemvParams),
    kernel!("gemv", "gemv_bf16_bf16x", GemvParams),
    kernel!("gemv", "gemm_bf16_tiled", GemmParams),
    kernel!("decode_fused", "decode_qkv_bf16", DecodeQkvParams),
    kernel!("decode_fused", "decode_gate_up_bf16", DecodeGateUpParams),
    kernel!("decode_fused", "gemv_rmsnorm_bf16", GemvRmsNormParams),
    kernel!("attention_decode", "attn_decode_naive", AttnDecodeParams),
    kernel!("attention_decode", "attn_decode_split_hd64", AttnDecodeParams),
    kernel!("attention_decode", "attn_decode_split_hd128", AttnDecodeParams),
    kernel!("attention_decode", "attn_decode_combine", AttnDecodeParams),
    kernel!("attention_prefill", "attn_prefill_naive_scores", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_naive_softmax", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_naive_pv", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_naive_row", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_tiled_hd64", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_tiled_hd128", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_flash_bf16_hd64", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_flash_bf16_hd128", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_flash_f16_hd64", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_flash_f16_hd128", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_wgmma_bf16_hd64", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_wgmma_bf16_hd128", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_wgmma_f16_hd64", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_wgmma_f16_hd128", AttnPrefillParams),
    kernel!("attention_prefill", "attn_prefill_tma_bf16_hd64", AttnPrefillTmaParams),
    kernel!("attention_prefill", "attn_prefill_tma_bf16_hd128", AttnPrefillTmaParams),
    kernel!("attention_prefill", "attn_prefill_tma_f16_hd64", AttnPrefillTmaParams),
    kernel!("attention_prefill", "attn_prefill_tma_f16_hd128", AttnPrefillTmaParams),
    kernel!("layout_probe", "layout_probe_tma", LayoutProbeTmaParams),
    kernel!("layout_probe", "layout_probe_wgmma_ss_n128", LayoutProbeMmaParams),
    kernel!("layout_probe", "layout_probe_wgmma_rs_n128", LayoutProbeMmaParams),
    kernel!("layout_probe", "layout_probe_wgmma_rs_n64", LayoutProbeMmaParams),
];

/// Every engine kernel, loaded (PTX JIT-compiled) on one GPU.
pub struct Kernels {
    gpu: GpuContext,
    modules: ModuleRegistry,
}

impl Kernels {
    /// Loads the modules of [`ENTRIES`] that the engine launches, all but the [`INSTRUMENTS`], and looks
    /// up their entries (the PTX JIT happens here).
    pub fn load(gpu: &GpuContext) -> Result<Self> {
        Self::load_where(gpu, |module| !INSTRUMENTS.contains(&module))
    }

    /// Loads every module of [`ENTRIES`], the instruments too (what the GPU tests run on).
    pub fn load_all(gpu: &GpuContext) -> Result<Self> {
        Self::load_where(gpu, |_| true)
    }

    fn load_where(gpu: &GpuContext, wanted: impl Fn(&str) -> bool) -> Result<Self> {
        let entries = ENTRIES.iter().filter(|e| wanted(e.module)).map(|e| (e.module, e.entry));
        let modules = ModuleRegistry::load(gpu, entries)?;
        Ok(Kernels { gpu: gpu.clone(), modules })
    }

    pub fn gpu(&self) -> &GpuContext {
        &self.gpu
    }

    pub fn modules(&self) -> &ModuleRegistry {
        &self.modules
    }
}

/// What the kernel wrappers launch on: a GPU ([`Kernels`]) or, with the `emu` feature, the CPU
/// emulator of the same kernel sources (`crate::emu::Emulator`). Each wrapper checks shapes and
/// buffers, plans the launch and calls [`Launcher::launch`]; nothing else differs between the two.
pub trait Launcher {
    /// The PTX set the kernels come from: `sm_90a` or `sm_80` (the emulator models `sm_90a`).
    fn arch(&self) -> &str;

    /// Lets `entry` of `module` use `bytes` of dynamic shared memory (a launch above 48 KB fails
    /// without it). A host-side attribute: safe while a graph is being captured.
    fn allow_dynamic_shared(&self, module: &str, entry: &str, bytes: u32) -> Result<()>;

    /// Launches `entry` of `module` with `params`.
    ///
    /// # Safety
    /// Same contract as [`cuda::launch`]: the caller has checked every address and shape in `params`.
    unsafe fn launch<P: DeviceRepr>(&self, module: &str, entry: &str, config: LaunchConfig, params: P) -> Result<()>;

    /// Encodes the TMA tensor map of `map` (checked first) for a kernel parameter.
    fn tensor_map(&self, map: &TensorMap3d) -> Result<RlTensorMap>;
}

impl Launcher for Kernels {
    fn arch(&self) -> &str {
        self.modules.arch()
    }

    fn allow_dynamic_shared(&self, module: &str, entry: &str, bytes: u32) -> Result<()> {
        let function = self.modules.function(module, entry)?;
        self.gpu.ctx().bind_to_thread().cuda("binding the context")?;
        function
            .set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .cuda(&format!("allowing `{entry}` {bytes} bytes of shared memory"))
    }

    unsafe fn launch<P: DeviceRepr>(&self, module: &str, entry: &str, config: LaunchConfig, params: P) -> Result<()> {
        let function = self.modules.function(module, entry)?;
        // SAFETY: forwarded to the caller.
        unsafe { cuda::launch(&self.gpu, function, entry, config, params) }
    }

    fn tensor_map(&self, map: &TensorMap3d) -> Result<RlTensorMap> {
        map.check()?;
        self.gpu.ctx().bind_to_thread().cuda("binding the context")?;
        let mut encoded = RlTensorMap::default();
        let element_strides = [1u32; 3];
        // SAFETY: `encoded` is 128 bytes, 64-byte aligned (RlTensorMap mirrors CUtensorMap); the
        // arrays hold rank 3 (dims, box, element strides) and rank - 1 (strides) values. The driver
        // only records the address; the kernel that uses the map is checked against the buffer.
        let status = unsafe {
            cu::cuTensorMapEncodeTiled(
                (&mut encoded as *mut RlTensorMap).cast(),
                cu::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT16,
                3,
                map.address as *mut std::ffi::c_void,
                map.dims.as_ptr(),
                map.strides.as_ptr(),
                map.box_dims.as_ptr(),
                element_strides.as_ptr(),
                cu::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                cu::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                cu::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        status.result().cuda(&format!("encoding the TMA tensor map {map:?}"))?;
        Ok(encoded)
    }
}

/// `value` as the u32 a kernel parameter holds; the error names the parameter.
pub(crate) fn as_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Invalid(format!("{what} = {value} does not fit the kernel's 32-bit index")))
}

/// Fails unless `value` is positive.
pub(crate) fn positive(what: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::Invalid(format!("{what} must be positive")));
    }
    Ok(())
}

/// Head dims the attention kernels are built for.
pub const SUPPORTED_HEAD_DIMS: [usize; 2] = [64, 128];

/// Fails with [`Error::Unsupported`] unless the attention kernels handle this head layout.
pub fn check_attention_heads(num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<()> {
    if !SUPPORTED_HEAD_DIMS.contains(&head_dim) {
        return Err(Error::Unsupported(format!("head_dim {head_dim}: the GPU attention kernels support 64 and 128")));
    }
    if num_kv_heads == 0 || num_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        return Err(Error::Invalid(format!("{num_heads} query heads are not a multiple of {num_kv_heads} KV heads")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_unique_and_name_known_modules() {
        let mut names: Vec<_> = ENTRIES.iter().map(|e| (e.module, e.entry)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ENTRIES.len());
        for e in ENTRIES {
            assert!(
                [LAYERS, GEMV, DECODE_FUSED, ATTENTION_DECODE, ATTENTION_PREFILL, LAYOUT_PROBE].contains(&e.module),
                "{e:?}"
            );
            // 8-byte aligned structs, or 64 where they hold TMA tensor maps (CUtensorMap's alignment).
            assert!(e.params.iter().all(|p| p.size % 8 == 0 && (p.align == 8 || p.align == 64)), "{e:?}");
        }
        assert!(INSTRUMENTS.iter().all(|m| ENTRIES.iter().any(|e| e.module == *m)), "an instrument without entries");
    }

    #[test]
    fn head_layouts_outside_the_kernels_are_refused_by_name() {
        assert!(check_attention_heads(9, 3, 64).is_ok());
        let e = check_attention_heads(8, 8, 96).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)) && e.to_string().contains("head_dim 96"));
        assert!(check_attention_heads(8, 3, 64).is_err());
    }
}
