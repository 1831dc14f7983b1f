// kernels-cuda/gemv.cu built for the CPU emulator, and the table of its entries.
#include "../gemv.cu"
#include "entries.h"

ROOFLAB_EMU_FAMILY(gemv, ROOFLAB_EMU_ENTRY(gemv_bf16_naive), ROOFLAB_EMU_ENTRY(gemv_bf16),
                   ROOFLAB_EMU_ENTRY(gemv_bf16_bf16x), ROOFLAB_EMU_ENTRY(gemm_bf16_tiled))
