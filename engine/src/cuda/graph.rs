//! CUDA graphs: capture a sequence of launches on the context's stream once, replay it with one
//! driver call. Kernels in a captured graph keep the parameter VALUES they were captured with, so
//! anything that changes between replays (token, position, length) must be read from device
//! buffers that the host updates before each replay. The graph drops through [`DropReported`], so
//! an error destroying it is reported naming it.

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

use super::launch::sync_check_enabled;
use super::{drop_reporting, CudaResultExt, DropReported, GpuContext};
use crate::{Error, Result};

/// An instantiated graph, ready to replay on the stream it was captured from.
pub struct CapturedGraph {
    graph: DropReported<CudaGraph>,
    gpu: GpuContext,
}

impl CapturedGraph {
    /// Captures everything `record` queues on `gpu`'s stream. Nothing runs during capture; the
    /// capture is always ended, also when `record` fails (its error is returned, with the error of
    /// ending the capture if that failed too).
    pub fn capture<F: FnOnce() -> Result<()>>(gpu: &GpuContext, record: F) -> Result<Self> {
        let stream = gpu.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .cuda("beginning stream capture")?;
        let recorded = record();
        let ended = stream.end_capture(CUgraphInstantiate_flags(0));
        if let Err(e) = recorded {
            return match ended {
                Err(end_error) => Err(Error::Cuda(format!(
                    "capturing a CUDA graph: {e}; ending the capture then failed too: {end_error}"
                ))),
                Ok(graph) => {
                    drop_reporting(gpu.ctx(), "the graph of a failed capture", graph);
                    Err(e)
                }
            };
        }
        let graph = ended
            .cuda("ending stream capture")?
            .ok_or_else(|| Error::Cuda("stream capture recorded no work".into()))?;
        let graph = DropReported::new(gpu.ctx(), "a CUDA graph", graph);
        graph.upload().cuda("uploading the graph")?;
        Ok(CapturedGraph { graph, gpu: gpu.clone() })
    }

    /// Queues one replay of the graph on the stream.
    pub fn replay(&self) -> Result<()> {
        self.graph.launch().cuda("replaying a CUDA graph")?;
        if sync_check_enabled() {
            self.gpu.synchronize().map_err(|e| Error::Cuda(format!("CUDA graph replay failed: {e}")))?;
        }
        Ok(())
    }
}
