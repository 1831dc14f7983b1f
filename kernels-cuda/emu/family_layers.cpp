// kernels-cuda/layers.cu built for the CPU emulator, and the table of its entries.
#include "../layers.cu"
#include "entries.h"

ROOFLAB_EMU_FAMILY(layers, ROOFLAB_EMU_ENTRY(embedding_bf16), ROOFLAB_EMU_ENTRY(rmsnorm_f32),
                   ROOFLAB_EMU_ENTRY(rope_f32), ROOFLAB_EMU_ENTRY(silu_mul_f32), ROOFLAB_EMU_ENTRY(residual_add_f32),
                   ROOFLAB_EMU_ENTRY(cast_f32_to_bf16), ROOFLAB_EMU_ENTRY(kv_append_bf16),
                   ROOFLAB_EMU_ENTRY(fill_uniform_bf16))
