//! The CPU emulator of the CUDA kernels (feature `emu`): kernels-cuda/*.cu compiled for the host
//! with kernels-cuda/emu/ (every CUDA thread a fiber; mma, ldmatrix, wgmma and cp.async modelled
//! from the PTX ISA), driven through the same wrappers as the GPU via [`Launcher`].
//!
//! It exists so the kernels' index algebra, masks, pipelines and launch configurations are tested
//! on machines without a GPU (CI included). It says nothing about speed, and a kernel that passes
//! here can still fail on the GPU where the hardware differs from the ISA text (see
//! kernels-cuda/emu/README.md).
//!
//! ```ignore
//! let emu = Emulator::new();
//! let x = HostBuffer::from_slice(&[1.0f32; 64]);
//! layers::rmsnorm(&emu, x.span(), w.span(), out.span(), 1, 64, 1e-5)?;
//! ```

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Mutex;

use cudarc::driver::{DeviceRepr, LaunchConfig};

use crate::cuda::DevSpan;
use crate::kernels::Launcher;
use crate::{Error, Result};

extern "C" {
    fn rl_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        smem: usize,
        params: *const c_void,
        params_size: usize,
        reverse: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn rl_emu_param_size(name: *const c_char) -> usize;
    fn rl_emu_alloc_guarded(bytes: usize, base: *mut *mut c_void, map_len: *mut usize) -> *mut c_void;
    fn rl_emu_free_guarded(base: *mut c_void, map_len: usize);
}

/// Dynamic shared memory a kernel may use before its limit is raised (as on the GPU).
const DEFAULT_SHARED_LIMIT: u32 = 48 << 10;

/// The emulated device. Launches run to completion before [`Launcher::launch`] returns.
#[derive(Default)]
pub struct Emulator {
    /// Raised dynamic shared memory limits, by entry.
    shared_limits: Mutex<HashMap<String, u32>>,
    /// Run each block's threads last to first.
    reverse: bool,
}

impl Emulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// An emulator that runs each block's threads in the other order: a barrier missing between one
    /// thread's write and another's read often shows in one of the two orders only.
    pub fn reversed() -> Self {
        Emulator { reverse: true, ..Self::default() }
    }

    /// Parameter bytes of `entry` as the emulated kernel declares them; None if it has no such entry.
    pub fn param_size(&self, entry: &str) -> Option<usize> {
        let name = CString::new(entry).ok()?;
        // SAFETY: a NUL-terminated string; the function only reads it.
        let size = unsafe { rl_emu_param_size(name.as_ptr()) };
        (size > 0).then_some(size)
    }
}

impl Launcher for Emulator {
    fn arch(&self) -> &str {
        "sm_90a"
    }

    fn allow_dynamic_shared(&self, _module: &str, entry: &str, bytes: u32) -> Result<()> {
        self.shared_limits.lock().expect("the limits lock is never poisoned").insert(entry.to_owned(), bytes);
        Ok(())
    }

    unsafe fn launch<P: DeviceRepr>(&self, _module: &str, entry: &str, config: LaunchConfig, params: P) -> Result<()> {
        let limit = self.shared_limits.lock().expect("never poisoned").get(entry).copied();
        let limit = limit.unwrap_or(DEFAULT_SHARED_LIMIT);
        if config.shared_mem_bytes > limit {
            return Err(Error::Cuda(format!(
                "launching `{entry}`: {} bytes of dynamic shared memory but its limit is {limit} (raise it first)",
                config.shared_mem_bytes
            )));
        }
        let name = CString::new(entry).map_err(|_| Error::Invalid(format!("kernel name {entry:?}")))?;
        let (g, b) = (config.grid_dim, config.block_dim);
        let grid = [g.0, g.1, g.2];
        let block = [b.0, b.1, b.2];
        let mut err = vec![0 as c_char; 512];
        // SAFETY: `params` is a plain by-value struct (DeviceRepr) read as bytes for the duration of the
        // call; the caller guarantees every address in it is live host memory of the right size.
        let rc = unsafe {
            rl_emu_launch(
                name.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                config.shared_mem_bytes as usize,
                (&params as *const P).cast(),
                size_of::<P>(),
                i32::from(self.reverse),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the emulator wrote a NUL-terminated message into `err`.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
            return Err(Error::Cuda(format!("emulated kernel failed: {msg}")));
        }
        Ok(())
    }
}

/// Host memory for emulated kernels: `len` values whose storage ends (after rounding up to 16 bytes,
/// the slack filled with NaN bytes) at an inaccessible page, with another before it, so a kernel that
/// reads or writes past either end stops with a fault naming the kernel, block and thread.
pub struct HostBuffer<T> {
    data: NonNull<T>,
    len: usize,
    base: *mut c_void,
    map_len: usize,
    _owns: PhantomData<T>,
}

// SAFETY: the buffer owns its mapping like a Vec owns its allocation.
unsafe impl<T: Send> Send for HostBuffer<T> {}
unsafe impl<T: Sync> Sync for HostBuffer<T> {}

impl<T: Copy> HostBuffer<T> {
    pub fn from_slice(values: &[T]) -> Self {
        let bytes = std::mem::size_of_val(values);
        let (mut base, mut map_len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: out-pointers to locals; the function maps fresh memory.
        let data = unsafe { rl_emu_alloc_guarded(bytes, &mut base, &mut map_len) };
        let data = NonNull::new(data.cast::<T>()).expect("mapping a guarded host buffer (out of memory?)");
        // SAFETY: the mapping holds at least `bytes` writable bytes at `data`, 16-byte aligned.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), data.as_ptr(), values.len()) };
        HostBuffer { data, len: values.len(), base, map_len, _owns: PhantomData }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrites the first `values.len()` elements (what a host-to-device copy does on the GPU).
    pub fn write(&mut self, values: &[T]) {
        assert!(values.len() <= self.len, "writing {} values into a buffer of {}", values.len(), self.len);
        // SAFETY: `len` writable values at `data`, owned by self and borrowed mutably.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.data.as_ptr(), values.len()) };
    }

    /// The values now (after the launches that wrote them: emulated launches are synchronous).
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: `len` initialised values at `data`, owned by self.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }.to_vec()
    }

    /// The buffer as a kernel operand; kernels may write through it (like a device buffer), so the
    /// caller must not hold `to_vec` results it expects to stay in step.
    pub fn span(&self) -> DevSpan<'_, T> {
        DevSpan::from_raw_parts(self.data.as_ptr() as u64, self.len)
    }
}

impl<T> Drop for HostBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in from_slice, unmapped once.
        unsafe { rl_emu_free_guarded(self.base, self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ENTRIES;

    #[test]
    fn the_emulator_has_every_entry_the_engine_launches_with_the_same_parameter_size() {
        let emu = Emulator::new();
        for e in ENTRIES {
            let size = emu.param_size(e.entry).unwrap_or_else(|| panic!("{} missing from the emulator", e.entry));
            assert_eq!(size, e.params[0].size, "{}", e.entry);
        }
        assert_eq!(emu.param_size("no_such_kernel"), None);
    }

    #[test]
    fn host_buffers_round_trip_and_refuse_nothing_small() {
        let v: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b = HostBuffer::from_slice(&v);
        assert_eq!(b.to_vec(), v);
        assert_eq!(b.span().len(), 37);
        assert_eq!(b.span().addr() % 16, 0);
        assert!(HostBuffer::<u32>::from_slice(&[]).is_empty());
    }
}
