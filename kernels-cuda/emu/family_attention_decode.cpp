// kernels-cuda/attention_decode.cu built for the CPU emulator, and the table of its entries.
#include "../attention_decode.cu"
#include "entries.h"

ROOFLAB_EMU_FAMILY(attention_decode, ROOFLAB_EMU_ENTRY(attn_decode_naive), ROOFLAB_EMU_ENTRY(attn_decode_split_hd64),
                   ROOFLAB_EMU_ENTRY(attn_decode_split_hd128), ROOFLAB_EMU_ENTRY(attn_decode_combine))
