// kernels-cuda/decode_fused.cu built for the CPU emulator, and the table of its entries.
#include "../decode_fused.cu"
#include "entries.h"

ROOFLAB_EMU_FAMILY(decode_fused, ROOFLAB_EMU_ENTRY(decode_qkv_bf16), ROOFLAB_EMU_ENTRY(decode_gate_up_bf16),
                   ROOFLAB_EMU_ENTRY(gemv_rmsnorm_bf16))
