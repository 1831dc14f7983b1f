// kernels-cuda/layout_probe.cu built for the CPU emulator, and the table of its entries. The emulator
// models sm_90a, so the probes are built (__CUDA_ARCH_FEAT_SM90_ALL). Run here, they check the probes
// themselves: the emulator's models follow the same ISA text as the kernels' layouts.
#define __CUDA_ARCH_FEAT_SM90_ALL 1
#include "../layout_probe.cu"
#include "entries.h"

ROOFLAB_EMU_FAMILY(layout_probe, ROOFLAB_EMU_ENTRY(layout_probe_tma), ROOFLAB_EMU_ENTRY(layout_probe_wgmma_ss_n128),
                   ROOFLAB_EMU_ENTRY(layout_probe_wgmma_rs_n128), ROOFLAB_EMU_ENTRY(layout_probe_wgmma_rs_n64))
