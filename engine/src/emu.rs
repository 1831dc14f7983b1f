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
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cudarc::driver::{DeviceRepr, LaunchConfig};

use crate::cuda::DevSpan;
use crate::kernels::tma::{RlTensorMap, TensorMap3d, ELEM_BYTES, SWIZZLE_BYTES};
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
        schedule: i32,
        seed: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn rl_emu_param_size(name: *const c_char) -> usize;
    fn rl_emu_alloc_guarded(bytes: usize, poison: c_int, base: *mut *mut c_void, map_len: *mut usize) -> *mut c_void;
    fn rl_emu_free_guarded(base: *mut c_void, map_len: usize);
    fn rl_emu_encode_tensor_map(
        out: *mut u64,
        address: u64,
        elem_bytes: u32,
        rank: u32,
        dims: *const u64,
        strides: *const u64,
        box_dims: *const u32,
        swizzle_bytes: u32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn rl_emu_wgmma_operand_addr(desc: u64, mn_major: i32, mn: i32, k: i32) -> u32;
}

/// Dynamic shared memory a kernel may use before its limit is raised (as on the GPU).
const DEFAULT_SHARED_LIMIT: u32 = 48 << 10;

/// The order in which the emulator runs each block's threads (each until it blocks or yields). Races
/// the protocol allows show in some orders only; kernels-cuda/emu/README.md says what each one finds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// First to last.
    #[default]
    InOrder,
    /// Last to first.
    Reversed,
    /// First to last, but warp 0 (a warp-specialised kernel's producer) runs only when no other thread
    /// can, after the TMA copies the others wait for have landed, and an mbarrier wait that succeeds at
    /// once yields: consumers get as far ahead of the producer as the protocol lets them.
    StarveWarp0,
    /// A fresh random order at every round of the scheduler (each time the threads that can run have run
    /// until they block), drawn from this seed (not 0) and the block's index: interleavings of warps at
    /// barriers and mbarrier waits that neither fixed order reaches. The same seed replays the same order.
    Shuffled(u64),
}

impl Schedule {
    /// What `rl_emu_launch` takes: the schedule's code and seed.
    fn code(self) -> (i32, u64) {
        match self {
            Schedule::InOrder => (0, 0),
            Schedule::Reversed => (1, 0),
            Schedule::StarveWarp0 => (2, 0),
            Schedule::Shuffled(seed) => (3, seed),
        }
    }
}

/// The emulated device. Launches run to completion before [`Launcher::launch`] returns.
#[derive(Default)]
pub struct Emulator {
    /// Raised dynamic shared memory limits, by entry.
    shared_limits: Mutex<HashMap<String, u32>>,
    schedule: Schedule,
    /// Kernels launched so far (what a CUDA graph of the same work would hold as kernel nodes).
    launches: AtomicUsize,
}

impl Emulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// An emulator that runs each block's threads in the other order: a barrier missing between one
    /// thread's write and another's read often shows in one of the two orders only.
    pub fn reversed() -> Self {
        Self::with_schedule(Schedule::Reversed)
    }

    /// An emulator that starves warp 0 (see [`Schedule::StarveWarp0`]): a consumer that skips a wait
    /// for the producer's work reads what the producer has not done yet.
    pub fn starving_warp0() -> Self {
        Self::with_schedule(Schedule::StarveWarp0)
    }

    /// An emulator that runs each block's threads in a fresh random order every round (see
    /// [`Schedule::Shuffled`]); `seed` must not be 0.
    pub fn shuffled(seed: u64) -> Self {
        Self::with_schedule(Schedule::Shuffled(seed))
    }

    /// An emulator that runs each block's threads in `schedule`'s order.
    pub fn with_schedule(schedule: Schedule) -> Self {
        Emulator { schedule, ..Self::default() }
    }

    /// The order it runs each block's threads in (`ROOFLAB_EMU_REVERSE=1`, `ROOFLAB_EMU_STARVE_WARP0=1` and
    /// `ROOFLAB_EMU_SHUFFLE=SEED` add theirs to every launch).
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// How many kernels this emulator has launched.
    pub fn launch_count(&self) -> usize {
        self.launches.load(Ordering::Relaxed)
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
        self.launches.fetch_add(1, Ordering::Relaxed);
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
                self.schedule.code().0,
                self.schedule.code().1,
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

    fn tensor_map(&self, map: &TensorMap3d) -> Result<RlTensorMap> {
        map.check()?;
        let mut encoded = RlTensorMap::default();
        let mut err = vec![0 as c_char; 256];
        // SAFETY: `encoded.opaque` holds the 16 words the encoder writes; the arrays hold rank 3
        // (dims, box) and rank - 1 (strides) values; `err` is writable for its length.
        let rc = unsafe {
            rl_emu_encode_tensor_map(
                encoded.opaque.as_mut_ptr(),
                map.address,
                ELEM_BYTES as u32,
                3,
                map.dims.as_ptr(),
                map.strides.as_ptr(),
                map.box_dims.as_ptr(),
                SWIZZLE_BYTES,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            // SAFETY: the encoder wrote a NUL-terminated message into `err`.
            let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
            return Err(Error::Invalid(format!("emulated TMA tensor map {map:?}: {msg}")));
        }
        Ok(encoded)
    }
}

/// The shared-memory byte address from which the emulated wgmma reads 16-bit element (`mn`, `k`) of an
/// operand described by matrix descriptor `desc` (K-major, or MN-major when `mn_major`), swizzle
/// applied; `k` is within one instruction (below 16). None for a descriptor the emulator refuses (a
/// base offset, reserved bits) or a coordinate out of range. What the tests below hold against the
/// PTX ISA's layout examples, and what a kernel author can print to compare with their own layout.
pub fn wgmma_operand_addr(desc: u64, mn_major: bool, mn: u32, k: u32) -> Option<u32> {
    let (mn, k) = (i32::try_from(mn).ok()?, i32::try_from(k).ok()?);
    // SAFETY: a pure function of its arguments.
    let addr = unsafe { rl_emu_wgmma_operand_addr(desc, i32::from(mn_major), mn, k) };
    (addr != u32::MAX).then_some(addr)
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
        let data = unsafe { rl_emu_alloc_guarded(bytes, 1, &mut base, &mut map_len) };
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
    use crate::kernels::tma::TensorMap3d;
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

    // ---- the Hopper models (kernels-cuda/emu/hopper.cpp, wgmma.cpp, exercised by selftest.cpp) ----

    /// Offset of coordinate `(mn, k)` in a CuTe layout `((..),(..)):((..),(..))` as the PTX ISA writes its
    /// shared-memory layouts: each mode's coordinate split colexicographically over that mode's shape.
    fn cute(shape: [&[u32]; 2], stride: [&[u32]; 2], coord: [u32; 2]) -> u32 {
        let mut offset = 0;
        for mode in 0..2 {
            let mut c = coord[mode];
            for (s, d) in shape[mode].iter().zip(stride[mode]) {
                offset += (c % s) * d;
                c /= s;
            }
            assert_eq!(c, 0, "coordinate {coord:?} outside the layout");
        }
        offset
    }

    /// CuTe's `Swizzle<bits, 4, 3>` on a byte address: 16-byte chunk bits XOR 128-byte row bits.
    fn swizzle(bits: u32, addr: u32) -> u32 {
        addr ^ (((addr >> 7) & ((1 << bits) - 1)) << 4)
    }

    /// A wgmma matrix descriptor: start, LBO and SBO in bytes, layout type (0 none, 1 128B, 2 64B, 3 32B).
    fn desc(start: u32, lbo: u32, sbo: u32, layout: u64) -> u64 {
        u64::from(start >> 4) | u64::from(lbo >> 4) << 16 | u64::from(sbo >> 4) << 32 | layout << 62
    }

    /// A shared address on every swizzle pattern's boundary (1024 bytes).
    const BASE: u32 = 0x2000;

    /// One layout of PTX ISA 9.7.15.5.1.2: its exact (or canonical) CuTe layout in the example's element
    /// units, the descriptor fields the text gives, and the swizzle.
    struct Layout {
        name: &'static str,
        mn_major: bool,
        layout_type: u64,
        lbo: u32,
        sbo: u32,
        shape: [&'static [u32]; 2],
        stride: [&'static [u32]; 2],
        elem_bytes: u32,
        swizzle_bits: u32,
        mn_extent: u32,
    }

    #[test]
    fn wgmma_operands_sit_where_the_isa_layout_examples_put_them() {
        let layouts = [
            // The worked examples (bf16 MN-major; tf32 K-major, read here as pairs of 16-bit elements).
            Layout {
                name: "MN-major, no swizzle, bf16: ((8,1,2),(8,2)):((1,8,64),(8,128)), LBO 16, SBO 8",
                mn_major: true,
                layout_type: 0,
                lbo: 16 << 4,
                sbo: 8 << 4,
                shape: [&[8, 1, 2], &[8, 2]],
                stride: [&[1, 8, 64], &[8, 128]],
                elem_bytes: 2,
                swizzle_bits: 0,
                mn_extent: 16,
            },
            Layout {
                name: "MN-major, 32B, bf16: Swizzle<1,4,3> o ((8,2,2),(8,2)):((1,8,128),(16,256))",
                mn_major: true,
                layout_type: 3,
                lbo: 16 << 4,
                sbo: 32 << 4,
                shape: [&[8, 2, 2], &[8, 2]],
                stride: [&[1, 8, 128], &[16, 256]],
                elem_bytes: 2,
                swizzle_bits: 1,
                mn_extent: 32,
            },
            Layout {
                name: "MN-major, 64B, bf16: Swizzle<2,4,3> o ((8,4,2),(8,2)):((1,8,256),(32,512))",
                mn_major: true,
                layout_type: 2,
                lbo: 32 << 4,
                sbo: 64 << 4,
                shape: [&[8, 4, 2], &[8, 2]],
                stride: [&[1, 8, 256], &[32, 512]],
                elem_bytes: 2,
                swizzle_bits: 2,
                mn_extent: 64,
            },
            Layout {
                name: "K-major, no swizzle, tf32: ((8,2),(4,4)):((4,32),(1,64)), LBO 16, SBO 8",
                mn_major: false,
                layout_type: 0,
                lbo: 16 << 4,
                sbo: 8 << 4,
                shape: [&[8, 2], &[4, 4]],
                stride: [&[4, 32], &[1, 64]],
                elem_bytes: 4,
                swizzle_bits: 0,
                mn_extent: 16,
            },
            Layout {
                name: "K-major, 32B, tf32: Swizzle<1,4,3> o ((8,2),(4,4)):((8,64),(1,4)), LBO unused",
                mn_major: false,
                layout_type: 3,
                lbo: 1 << 4,
                sbo: 16 << 4,
                shape: [&[8, 2], &[4, 4]],
                stride: [&[8, 64], &[1, 4]],
                elem_bytes: 4,
                swizzle_bits: 1,
                mn_extent: 16,
            },
            // The canonical layouts of the table (T = 8 bf16 per 16 bytes) where the text has no example.
            Layout {
                name: "MN-major, 128B swizzle: ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), LBO 4096 B, SBO 1024 B",
                mn_major: true,
                layout_type: 1,
                lbo: 4096,
                sbo: 1024,
                shape: [&[8, 8, 2], &[8, 2]],
                stride: [&[1, 8, 2048], &[64, 512]],
                elem_bytes: 2,
                swizzle_bits: 3,
                mn_extent: 128,
            },
            Layout {
                name: "K-major, 128B swizzle: ((8,m),(T,2k)):((8T,SBO),(1,T)), SBO 1024 B",
                mn_major: false,
                layout_type: 1,
                lbo: 16,
                sbo: 1024,
                shape: [&[8, 8], &[8, 2]],
                stride: [&[64, 512], &[1, 8]],
                elem_bytes: 2,
                swizzle_bits: 3,
                mn_extent: 64,
            },
            Layout {
                name: "K-major, 64B swizzle: ((8,m),(T,2k)):((4T,SBO),(1,T)), SBO 512 B",
                mn_major: false,
                layout_type: 2,
                lbo: 16,
                sbo: 512,
                shape: [&[8, 4], &[8, 2]],
                stride: [&[32, 256], &[1, 8]],
                elem_bytes: 2,
                swizzle_bits: 2,
                mn_extent: 32,
            },
        ];
        for l in &layouts {
            let d = desc(BASE, l.lbo, l.sbo, l.layout_type);
            for mn in 0..l.mn_extent {
                for k in 0..16 {
                    // A 16-bit element of a tf32 layout is half of the 4-byte element k / 2.
                    let (unit_k, half) = if l.elem_bytes == 4 { (k / 2, (k % 2) * 2) } else { (k, 0) };
                    let byte = BASE + l.elem_bytes * cute(l.shape, l.stride, [mn, unit_k]) + half;
                    let want = swizzle(l.swizzle_bits, byte);
                    let got = wgmma_operand_addr(d, l.mn_major, mn, k);
                    assert_eq!(got, Some(want), "{}: element ({mn}, {k})", l.name);
                }
            }
        }
    }

    #[test]
    fn swizzled_wgmma_operands_read_the_128_byte_tma_placement() {
        // A 1024-aligned box of 64-column bf16 rows, as TMA's 128-byte swizzle writes it (PTX ISA 5.5.7:
        // 16-byte chunk c of 128-byte row r at chunk c ^ r % 8).
        let placed = |r: u32, c: u32| BASE + r * 128 + ((c / 8) ^ (r % 8)) * 16 + (c % 8) * 2;
        // K-major (Q, K: rows x 64 columns of k): k16 step s starts 32 bytes into the row; SBO = 8 rows.
        for r in 0..64 {
            for c in 0..64 {
                let d = desc(BASE + (c / 16) * 32, 16, 1024, 1);
                assert_eq!(wgmma_operand_addr(d, false, r, c % 16), Some(placed(r, c)), "K-major ({r}, {c})");
            }
        }
        // MN-major (V: keys x 128 columns in two 64-column panels LBO apart): k16 step s starts 16 rows
        // (2048 bytes) on; SBO = 8 keys.
        let panel = 128 * 128;
        for key in 0..128 {
            for col in 0..128 {
                let d = desc(BASE + (key / 16) * 2048, panel, 1024, 1);
                let want = placed(key, col % 64) + (col / 64) * panel;
                assert_eq!(wgmma_operand_addr(d, true, col, key % 16), Some(want), "MN-major (key {key}, col {col})");
            }
        }
        // What the emulator refuses to guess: a base offset, reserved bits.
        assert_eq!(wgmma_operand_addr(desc(BASE, 16, 1024, 1) | 1 << 49, false, 0, 0), None);
        assert_eq!(wgmma_operand_addr(desc(BASE, 16, 1024, 1) | 1 << 14, false, 0, 0), None);
        assert_eq!(wgmma_operand_addr(desc(BASE, 16, 1024, 1), false, 0, 16), None);
    }

    fn encode(
        address: u64,
        dims: &[u64],
        strides: &[u64],
        boxes: &[u32],
        swizzle: u32,
    ) -> std::result::Result<(), String> {
        let mut out = [0u64; 16];
        let mut err = vec![0 as c_char; 256];
        // SAFETY: `out` holds 16 words, the slices hold rank and rank - 1 values, `err` is writable.
        let rc = unsafe {
            rl_emu_encode_tensor_map(
                out.as_mut_ptr(),
                address,
                2,
                dims.len() as u32,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                swizzle,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the encoder wrote a NUL-terminated message.
        Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned())
    }

    #[test]
    fn the_tensor_map_encoder_refuses_what_cu_tensor_map_encode_tiled_refuses() {
        let (dims, strides, boxes) = ([128u64, 8, 1000], [256u64, 2048], [64u32, 1, 128]);
        encode(0x10000, &dims, &strides, &boxes, 128).unwrap();
        encode(0x10000, &dims, &strides, &[8, 1, 128], 0).unwrap();
        let bad: [(std::result::Result<(), String>, &str); 9] = [
            (encode(0x10008, &dims, &strides, &boxes, 128), "16-byte aligned"),
            (encode(0, &dims, &strides, &boxes, 128), "non-zero"),
            (encode(0x10000, &[128, 0, 1000], &strides, &boxes, 128), "dimension 1 is 0"),
            (encode(0x10000, &[128, 8, (1 << 32) + 1], &strides, &boxes, 128), "dimension 2"),
            (encode(0x10000, &dims, &[256, 2056], &boxes, 128), "stride 2 is 2056"),
            (encode(0x10000, &dims, &[256, 1 << 40], &boxes, 128), "below 2^40"),
            (encode(0x10000, &dims, &strides, &[64, 1, 257], 128), "box dimension 2 is 257"),
            (encode(0x10000, &dims, &strides, &[4, 1, 128], 0), "multiple of 16"),
            (encode(0x10000, &dims, &strides, &[128, 1, 128], 128), "more than the 128-byte swizzle span"),
        ];
        for (result, want) in bad {
            let e = result.expect_err(want);
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
        assert!(encode(0x10000, &dims, &strides, &boxes, 96).unwrap_err().contains("swizzle of 96"));
    }

    /// The parameters of kernels-cuda/emu/selftest.cpp's entries.
    #[repr(C, align(64))]
    #[derive(Clone, Copy, Default)]
    struct SelftestParams {
        a: RlTensorMap,
        b: RlTensorMap,
        out: u64,
        input: u64,
        mode: i32,
        arg: i32,
    }
    // SAFETY: a plain by-value struct of integers, laid out as the C++ one (size pinned below and there).
    unsafe impl DeviceRepr for SelftestParams {}

    fn selftest(emu: &Emulator, entry: &str, threads: u32, params: SelftestParams) -> Result<()> {
        assert_eq!(size_of::<SelftestParams>(), 320);
        let config = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 32 << 10 };
        // SAFETY: every address in `params` is a live HostBuffer as large as the kernel reads or writes.
        unsafe { emu.launch("selftest", entry, config, params) }
    }

    /// Multiples of 1/8 in [-1, 1): exact in bf16, and so are their products' sums in f32.
    fn eighths(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 + seed * 3 + i / 64 * 5) % 16) as f32 / 8.0 - 1.0).collect()
    }

    fn bf16_bits(v: &[f32]) -> Vec<u16> {
        v.iter().map(|x| (x.to_bits() >> 16) as u16).collect()
    }

    /// A `[rows][cols]` bf16 tensor as a TMA view `{cols, 1, rows}` with boxes of 64 columns by `box_rows`.
    fn map_of(emu: &Emulator, buf: &HostBuffer<u16>, rows: u64, cols: u64, box_rows: u32) -> RlTensorMap {
        let view = TensorMap3d {
            address: buf.span().addr(),
            dims: [cols, 1, rows],
            strides: [cols * 2, cols * 2],
            box_dims: [64, 1, box_rows],
        };
        emu.tensor_map(&view).unwrap()
    }

    #[test]
    fn tma_and_swizzled_wgmma_give_the_host_product() {
        let emu = Emulator::new();
        // A: 50 rows of 64 k, its box starting at row -3 (rows outside the tensor are zero); B: 128 x 64.
        let (a, b) = (eighths(50 * 64, 1), eighths(128 * 64, 2));
        let (a_buf, b_buf) = (HostBuffer::from_slice(&bf16_bits(&a)), HostBuffer::from_slice(&bf16_bits(&b)));
        let out = HostBuffer::from_slice(&[f32::NAN; 64 * 128]);
        let p = SelftestParams {
            a: map_of(&emu, &a_buf, 50, 64, 64),
            b: map_of(&emu, &b_buf, 128, 64, 128),
            out: out.span().addr(),
            arg: -3,
            ..Default::default()
        };
        selftest(&emu, "rl_emu_selftest_gemm", 128, p).unwrap();
        let d = out.to_vec();
        for m in 0..64 {
            for n in 0..128 {
                let row = m as i64 - 3;
                let want: f32 = if (0..50).contains(&row) {
                    (0..64).map(|k| a[row as usize * 64 + k] * b[n * 64 + k]).sum()
                } else {
                    0.0
                };
                assert_eq!(d[m * 128 + n], want, "K-major D[{m}][{n}]");
            }
        }

        // A from registers, B MN-major ([64 k][128 n] in two 64-column panels).
        let (a, b) = (eighths(64 * 64, 3), eighths(64 * 128, 4));
        let (a_buf, b_buf) = (HostBuffer::from_slice(&bf16_bits(&a)), HostBuffer::from_slice(&bf16_bits(&b)));
        let p = SelftestParams {
            b: map_of(&emu, &b_buf, 64, 128, 64),
            out: out.span().addr(),
            input: a_buf.span().addr(),
            mode: 1,
            ..Default::default()
        };
        selftest(&emu, "rl_emu_selftest_gemm", 128, p).unwrap();
        let d = out.to_vec();
        for m in 0..64 {
            for n in 0..128 {
                let want: f32 = (0..64).map(|k| a[m * 64 + k] * b[k * 128 + n]).sum();
                assert_eq!(d[m * 128 + n], want, "MN-major D[{m}][{n}]");
            }
        }
    }

    #[test]
    fn a_tma_copy_places_its_box_as_the_128_byte_swizzle_text_says() {
        let emu = Emulator::new();
        let a = bf16_bits(&eighths(64 * 64, 5));
        let a_buf = HostBuffer::from_slice(&a);
        let out = HostBuffer::from_slice(&[0f32; 2048]);
        let p = SelftestParams {
            a: map_of(&emu, &a_buf, 64, 64, 64),
            out: out.span().addr(),
            mode: 2,
            ..Default::default()
        };
        selftest(&emu, "rl_emu_selftest_gemm", 128, p).unwrap();
        let bytes: Vec<u8> = out.to_vec().iter().flat_map(|w| w.to_le_bytes()).collect();
        for r in 0..64 {
            for c in 0..64 {
                let at = r * 128 + ((c / 8) ^ (r % 8)) * 16 + (c % 8) * 2;
                assert_eq!(u16::from_le_bytes([bytes[at], bytes[at + 1]]), a[r * 64 + c], "element ({r}, {c})");
            }
        }
    }

    #[test]
    fn the_hopper_models_catch_each_mistake_by_name() {
        let a = HostBuffer::from_slice(&bf16_bits(&eighths(64 * 64, 6)));
        let cases: [(i32, u32, &[&str]); 21] = [
            (1, 32, &["holds no initialised mbarrier"]),
            (2, 64, &["deadlock", "threads 0-63: mbarrier 0x", "parity 0 (phase 0: 1 of 1 arrivals pending"]),
            (3, 32, &["thread (0,0,0)", "was overwritten since its init"]),
            (4, 32, &["1 TMA copies", "never landed"]),
            (5, 32, &["completed 4096 bytes more than the phase's expect_tx"]),
            (7, 128, &["accumulator registers of thread 0 written while a wgmma was in flight"]),
            (8, 128, &["exited with 1 wgmma ops in flight"]),
            (11, 64, &["lanes of one warp split between bar.sync 1, 64 and bar.sync 2, 64"]),
            (12, 64, &["deadlock", "threads 0-31: bar.sync 1 (32 of 64 threads arrived)", "__syncthreads (block)"]),
            (14, 128, &["setmaxnreg.inc 20"]),
            // Forward, the exiting threads find the others waiting; reversed, the others find them gone.
            (15, 128, &["setmaxnreg"]),
            (16, 64, &["mbarrier.init of the mbarrier at", "waits on it"]),
            (17, 32, &["not 1024-byte aligned"]),
            (19, 32, &["named barriers are 1 to 15"]),
            (20, 32, &["a phase that can never complete (1 of 2 arrivals pending"]),
            (21, 128, &["A-fragment registers of thread 0's in-flight wgmma were written"]),
            (22, 128, &["base offset"]),
            (23, 128, &["crosses a 128-byte swizzle row"]),
            (24, 32, &["all 1 arrivals of the current phase were already made"]),
            (25, 128, &["cp.async.bulk.tensor.3d writes shared bytes", "wgmma of warpgroup 0 still in flight"]),
            (26, 32, &["overlaps the box of a copy not landed yet"]),
        ];
        for emu in [Emulator::new(), Emulator::reversed(), Emulator::starving_warp0(), Emulator::shuffled(7)] {
            let map = emu.tensor_map(&TensorMap3d::heads(a.span().addr(), 64, 1, 64, 64)).unwrap();
            for (mode, threads, wants) in cases {
                let out = HostBuffer::from_slice(&[0f32; 512]);
                let p = SelftestParams { a: map, out: out.span().addr(), mode, ..Default::default() };
                let e = selftest(&emu, "rl_emu_selftest_fault", threads, p).expect_err(&format!("mode {mode}"));
                let e = e.to_string();
                for want in wants {
                    assert!(e.contains(want), "mode {mode} ({:?}): {e:?} should say {want:?}", emu.schedule);
                }
            }
        }
    }

    #[test]
    fn the_hopper_models_keep_their_rules() {
        let a_vals = bf16_bits(&eighths(64 * 64, 7));
        let a = HostBuffer::from_slice(&a_vals);
        for emu in [Emulator::new(), Emulator::reversed(), Emulator::starving_warp0(), Emulator::shuffled(7)] {
            let map = emu.tensor_map(&TensorMap3d::heads(a.span().addr(), 64, 1, 64, 64)).unwrap();
            let run = |mode: i32, threads: u32| {
                let out = HostBuffer::from_slice(&[0f32; 512]);
                let p = SelftestParams { a: map, out: out.span().addr(), mode, ..Default::default() };
                selftest(&emu, "rl_emu_selftest_fault", threads, p).unwrap_or_else(|e| panic!("mode {mode}: {e}"));
                out.to_vec()
            };
            // A box read before its mbarrier wait is NaN; after, what global memory holds (thread 0 issues the
            // copy, then reads; the others read after thread 0's wait landed it, or before the issue).
            let out = run(6, 32);
            assert!(out[0].is_nan(), "thread 0 read between its copy's issue and its wait: {}", out[0]);
            for t in 0..32 {
                let want = u32::from(a_vals[2 * t]) | u32::from(a_vals[2 * t + 1]) << 16;
                assert_eq!(out[32 + t].to_bits(), want, "thread {t} after the wait");
            }
            // The accumulators are NaN until the wait_group that retires their op.
            let out = run(9, 128);
            assert!(out[..128].iter().all(|x| x.is_nan()) && out[128..256].iter().all(|&x| x == 0.0));
            // wait_group 1 leaves the newest group in flight.
            let out = run(10, 128);
            assert!(out[..128].iter().all(|&x| x == 0.0), "the older group retired");
            assert!(out[128..256].iter().all(|x| x.is_nan()), "the newest group still in flight");
            assert!(out[256..384].iter().all(|&x| x == 0.0), "wait_group 0 retired it");
            // Named barriers pass data between warps and reset after each completion.
            let out = run(13, 64);
            for round in 0..2 {
                for i in 0..32 {
                    assert_eq!(out[round * 32 + i], (round * 100 + i) as f32, "round {round} lane {i}");
                }
            }
            // try_wait.parity 1 on a fresh mbarrier: the phase before phase 0 counts as complete.
            assert!(run(18, 32)[..32].iter().all(|&x| x == 1.0));
        }
    }

    /// Selftest mode 28 records the order a block's 64 threads run in, twice, a barrier apart.
    #[test]
    fn each_schedule_runs_a_blocks_threads_in_its_own_order() {
        let order = |emu: &Emulator| -> Result<(Vec<u32>, Vec<u32>)> {
            let out = HostBuffer::from_slice(&[f32::NAN; 128]);
            selftest(
                emu,
                "rl_emu_selftest_fault",
                64,
                SelftestParams { out: out.span().addr(), mode: 28, ..Default::default() },
            )?;
            let seen: Vec<u32> = out.to_vec().iter().map(|&x| x as u32).collect();
            Ok((seen[..64].to_vec(), seen[64..].to_vec()))
        };
        let all: Vec<u32> = (0..64).collect();
        let is_permutation = |round: &[u32]| {
            let mut sorted = round.to_vec();
            sorted.sort_unstable();
            sorted == all
        };
        // Threads that follow each other in index order (a fixed schedule's rounds are runs of them; the
        // thread that completes a barrier goes on first).
        let runs = |round: &[u32]| round.windows(2).filter(|w| w[1] == w[0] + 1 || w[0] == w[1] + 1).count();
        let fixed = [order(&Emulator::new()).unwrap(), order(&Emulator::reversed()).unwrap()];
        let shuffled = order(&Emulator::shuffled(7)).unwrap();
        for (first, second) in fixed.iter().chain([&shuffled]) {
            assert!(
                is_permutation(first) && is_permutation(second),
                "every thread once per round: {first:?} {second:?}"
            );
        }
        for (first, second) in &fixed {
            assert!(runs(first) >= 60 && runs(second) >= 60, "{first:?} {second:?}");
        }
        let (first, second) = shuffled.clone();
        assert!(runs(&first) < 16 && runs(&second) < 16, "shuffled: {first:?} {second:?}");
        assert_ne!(first, second, "a fresh order every round");
        assert_eq!(order(&Emulator::shuffled(7)).unwrap(), shuffled, "the seed replays its order");
        assert_ne!(order(&Emulator::shuffled(8)).unwrap(), shuffled, "another seed, another order");
        let err = order(&Emulator::shuffled(0)).unwrap_err().to_string();
        assert!(err.contains("seed other than 0"), "{err}");
    }

    /// v4's `v_fixed` hand-over in small (selftest mode 27): warp 0 lands a box and zeroes its first 32
    /// words, warp 1 reads them. Waiting for the fix-up, every schedule reads zeros; skipping that wait,
    /// the starved schedule runs the consumers before the producer fixes anything up.
    #[test]
    fn starving_warp_0_runs_its_consumers_ahead_of_the_producer() {
        let a_vals = bf16_bits(&eighths(64 * 64, 8));
        let a = HostBuffer::from_slice(&a_vals);
        let landed: Vec<u32> = (0..32).map(|t| u32::from(a_vals[2 * t]) | u32::from(a_vals[2 * t + 1]) << 16).collect();
        assert!(landed.iter().all(|&w| w != 0), "the test needs non-zero data");
        for emu in [Emulator::new(), Emulator::reversed(), Emulator::starving_warp0(), Emulator::shuffled(7)] {
            let map = emu.tensor_map(&TensorMap3d::heads(a.span().addr(), 64, 1, 64, 64)).unwrap();
            for skip_wait in [0, 1] {
                let out = HostBuffer::from_slice(&[0f32; 512]);
                let p =
                    SelftestParams { a: map, out: out.span().addr(), mode: 27, arg: skip_wait, ..Default::default() };
                selftest(&emu, "rl_emu_selftest_fault", 64, p).unwrap();
                let words: Vec<u32> = out.to_vec()[..32].iter().map(|x| x.to_bits()).collect();
                if skip_wait == 0 {
                    assert!(words.iter().all(|&w| w == 0), "{:?}, waiting for the fix-up: {words:x?}", emu.schedule);
                } else if emu.schedule == Schedule::StarveWarp0 {
                    assert_eq!(words, landed, "starved, the consumers read the box before the producer's fix-up");
                }
            }
        }
    }
}
