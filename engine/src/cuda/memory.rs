//! Device memory: typed spans of device buffers (what kernel params are built from) and a ledger
//! that checks each allocation against the driver's free memory BEFORE trying it, so running out
//! names what did not fit, and keeps the bytes allocated per purpose (weights, KV cache, ...).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, ValidAsZeroBits};

use super::GpuContext;
use crate::{Error, Result};

/// Memory left free for the driver, cuBLAS workspaces and the like when checking a plan.
pub const RESERVED_BYTES: usize = 256 << 20;

/// A typed range of device memory: the address of its first element and its length in elements.
/// It borrows the buffer it came from, so it cannot outlive it.
#[derive(Debug)]
pub struct DevSpan<'a, T> {
    addr: u64,
    len: usize,
    _buffer: PhantomData<&'a T>,
}

impl<T> Clone for DevSpan<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for DevSpan<'_, T> {}

impl<'a, T> DevSpan<'a, T> {
    /// The whole of `buffer`.
    pub fn of(buffer: &'a CudaSlice<T>) -> Self {
        // Event tracking is off in every rooflab context, so the returned guard does nothing.
        let (addr, _guard) = buffer.device_ptr(buffer.stream());
        DevSpan { addr, len: buffer.len(), _buffer: PhantomData }
    }

    /// A span of `len` elements at `addr` in memory the kernels can reach: the CPU emulator's host
    /// buffers (`crate::emu::HostBuffer`), which hand out spans only while they are borrowed; and the
    /// unit tests of the launch wrappers' argument checks, which launch nothing.
    #[cfg(any(feature = "emu", test))]
    pub(crate) fn from_raw_parts(addr: u64, len: usize) -> Self {
        DevSpan { addr, len, _buffer: PhantomData }
    }

    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// Elements `range` of the span.
    pub fn slice(&self, range: Range<usize>) -> Result<Self> {
        if range.start > range.end || range.end > self.len {
            return Err(Error::Invalid(format!("device span of {} elements has no range {range:?}", self.len)));
        }
        let addr = self.addr + (range.start * std::mem::size_of::<T>()) as u64;
        Ok(DevSpan { addr, len: range.end - range.start, _buffer: PhantomData })
    }

    /// Rows `rows` of a row-major matrix with `row_len` elements per row.
    pub fn rows(&self, rows: Range<usize>, row_len: usize) -> Result<Self> {
        self.slice(rows.start * row_len..rows.end * row_len)
    }

    /// Fails, naming the operand, unless the span holds at least `needed` elements.
    pub fn expect_len(&self, what: &str, needed: usize) -> Result<()> {
        if self.len < needed {
            return Err(Error::Invalid(format!("{what}: device buffer holds {} elements, {needed} needed", self.len)));
        }
        Ok(())
    }

    /// Fails unless the address is a multiple of `align` bytes (for 16-byte vector loads).
    pub fn expect_aligned(&self, what: &str, align: u64) -> Result<()> {
        if !self.addr.is_multiple_of(align) {
            return Err(Error::Invalid(format!("{what}: device address {:#x} is not {align}-byte aligned", self.addr)));
        }
        Ok(())
    }

    /// True when the two spans share any byte.
    pub fn overlaps<U>(&self, other: &DevSpan<'_, U>) -> bool {
        let (a0, a1) = (self.addr, self.addr + self.bytes() as u64);
        let (b0, b1) = (other.addr, other.addr + other.bytes() as u64);
        a0 < b1 && b0 < a1
    }
}

/// Checks the operands of `y[m][n] (+)= x[m][k] · w[n][k]ᵀ` before any matrix product (the GEMV, the
/// tiled GEMM, cuBLAS): each span holds its shape and the output overlaps neither input. Errors are
/// named `"{what} weight"`, `"{what} activations"`, `"{what} output"`.
pub fn check_matmul_operands<W, X>(
    what: &str,
    w: DevSpan<W>,
    x: DevSpan<X>,
    y: DevSpan<f32>,
    (m, n, k): (usize, usize, usize),
) -> Result<()> {
    if k == 0 {
        return Err(Error::Invalid(format!("{what} k must be positive")));
    }
    w.expect_len(&format!("{what} weight"), n * k)?;
    x.expect_len(&format!("{what} activations"), m * k)?;
    y.expect_len(&format!("{what} output"), m * n)?;
    if y.overlaps(&x) || y.overlaps(&w) {
        return Err(Error::Invalid(format!("{what} output overlaps its inputs")));
    }
    Ok(())
}

/// Bytes allocated per purpose on one device, with free-memory checks before each allocation.
pub struct MemoryLedger {
    gpu: GpuContext,
    by_purpose: BTreeMap<String, usize>,
}

impl MemoryLedger {
    pub fn new(gpu: &GpuContext) -> Self {
        MemoryLedger { gpu: gpu.clone(), by_purpose: BTreeMap::new() }
    }

    /// Fails with [`Error::OutOfGpuMemory`] naming `what` unless `bytes` fit in the free memory
    /// (less [`RESERVED_BYTES`]).
    pub fn check_fits(&self, what: &str, bytes: usize) -> Result<()> {
        let (free, _total) = self.gpu.memory_info()?;
        if bytes > free.saturating_sub(RESERVED_BYTES) {
            return Err(Error::OutOfGpuMemory { what: what.to_string(), needed: bytes, free });
        }
        Ok(())
    }

    /// A zero-filled buffer of `len` elements, counted under `purpose`.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &mut self,
        purpose: &str,
        what: &str,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        self.counted(purpose, what, len, |stream, len| stream.alloc_zeros::<T>(len))
    }

    /// A buffer of `len` elements, not initialised, counted under `purpose`.
    ///
    /// # Safety
    /// Nothing may read an element before a kernel (or a copy) has written it.
    pub unsafe fn alloc_uninit<T: DeviceRepr>(
        &mut self,
        purpose: &str,
        what: &str,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        // SAFETY: the caller writes every element before reading it.
        self.counted(purpose, what, len, |stream, len| unsafe { stream.alloc::<T>(len) })
    }

    /// `allocate(stream, len)` (at least one element) once the buffer is known to fit, counted under
    /// `purpose`.
    fn counted<T>(
        &mut self,
        purpose: &str,
        what: &str,
        len: usize,
        allocate: impl FnOnce(&Arc<CudaStream>, usize) -> std::result::Result<CudaSlice<T>, DriverError>,
    ) -> Result<CudaSlice<T>> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        self.check_fits(what, bytes)?;
        let buffer = allocate(self.gpu.stream(), len.max(1)).map_err(|e| self.alloc_error(what, bytes, e))?;
        *self.by_purpose.entry(purpose.to_string()).or_default() += bytes;
        Ok(buffer)
    }

    /// A device copy of `host`, counted under `purpose`.
    pub fn upload<T: DeviceRepr>(&mut self, purpose: &str, what: &str, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return Err(Error::Invalid(format!("{what}: nothing to upload")));
        }
        let bytes = std::mem::size_of_val(host);
        self.check_fits(what, bytes)?;
        let buffer = self.gpu.stream().clone_htod(host).map_err(|e| self.alloc_error(what, bytes, e))?;
        *self.by_purpose.entry(purpose.to_string()).or_default() += bytes;
        Ok(buffer)
    }

    /// Bytes allocated under `purpose`.
    pub fn allocated(&self, purpose: &str) -> usize {
        self.by_purpose.get(purpose).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.by_purpose.values().sum()
    }

    /// "weights 270.0 MiB, kv cache 90.0 MiB, ..." in allocation-purpose order.
    pub fn summary(&self) -> String {
        let parts: Vec<String> =
            self.by_purpose.iter().map(|(k, v)| format!("{k} {:.1} MiB", *v as f64 / (1 << 20) as f64)).collect();
        parts.join(", ")
    }

    fn alloc_error(&self, what: &str, bytes: usize, e: DriverError) -> Error {
        let failed = format!("allocating {what} ({bytes} bytes): {e}");
        if e.0 != CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return Error::Cuda(failed);
        }
        // Reading free memory can fail with an error a drop deferred: never swallow it.
        match self.gpu.memory_info() {
            Ok((free, _)) => Error::OutOfGpuMemory { what: what.to_string(), needed: bytes, free },
            Err(also) => Error::Cuda(format!("{failed}; reading free memory then failed: {also}")),
        }
    }
}
