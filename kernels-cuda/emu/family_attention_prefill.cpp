// kernels-cuda/attention_prefill.cu built for the CPU emulator, and the table of its entries. The
// emulator models sm_90a, so the wgmma kernels are built too (__CUDA_ARCH_FEAT_SM90_ALL).
#define __CUDA_ARCH_FEAT_SM90_ALL 1
#include "../attention_prefill.cu"
#include "entries.h"

ROOFLAB_EMU_FAMILY(attention_prefill, ROOFLAB_EMU_ENTRY(attn_prefill_naive_scores),
                   ROOFLAB_EMU_ENTRY(attn_prefill_naive_softmax), ROOFLAB_EMU_ENTRY(attn_prefill_naive_pv),
                   ROOFLAB_EMU_ENTRY(attn_prefill_naive_row), ROOFLAB_EMU_ENTRY(attn_prefill_tiled_hd64),
                   ROOFLAB_EMU_ENTRY(attn_prefill_tiled_hd128), ROOFLAB_EMU_ENTRY(attn_prefill_flash_bf16_hd64),
                   ROOFLAB_EMU_ENTRY(attn_prefill_flash_bf16_hd128), ROOFLAB_EMU_ENTRY(attn_prefill_flash_f16_hd64),
                   ROOFLAB_EMU_ENTRY(attn_prefill_flash_f16_hd128), ROOFLAB_EMU_ENTRY(attn_prefill_wgmma_bf16_hd64),
                   ROOFLAB_EMU_ENTRY(attn_prefill_wgmma_bf16_hd128), ROOFLAB_EMU_ENTRY(attn_prefill_wgmma_f16_hd64),
                   ROOFLAB_EMU_ENTRY(attn_prefill_wgmma_f16_hd128),
                   ROOFLAB_EMU_ENTRY(attn_prefill_tma_bf16_hd64), ROOFLAB_EMU_ENTRY(attn_prefill_tma_bf16_hd128),
                   ROOFLAB_EMU_ENTRY(attn_prefill_tma_f16_hd64), ROOFLAB_EMU_ENTRY(attn_prefill_tma_f16_hd128))
