// The inline-PTX instructions the kernels use, one device function each, with the operands in the
// instruction's own order (`cvt_rn_bf16x2_f32(a, b)` puts a in the HIGH half, as the ISA says), so a
// kernel that passes them in the wrong order is wrong on the GPU and in the CPU emulator alike.
//
// nvcc builds the asm. The CPU emulator (kernels-cuda/emu/, ROOFLAB_EMU defined) builds the same
// functions on its own model of each instruction (rl_emu::*), written from the PTX ISA: that is what
// lets the kernels' index algebra, masks and pipelines be tested without a GPU.
#pragma once

#include <stdint.h>

namespace ptx {

// ---- addresses -------------------------------------------------------------------------------

// The 32-bit .shared-window address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t shared_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// `x`, hidden from the optimiser (an empty asm that "may change" it), so that values derived from it are
// recomputed where they are used instead of being hoisted out of loops and held in registers.
__device__ __forceinline__ unsigned opaque(unsigned x) {
#ifndef ROOFLAB_EMU
    asm volatile("" : "+r"(x));
#endif
    return x;
}

__device__ __forceinline__ size_t opaque(size_t x) {
#ifndef ROOFLAB_EMU
    asm volatile("" : "+l"(x));
#endif
    return x;
}

// Keeps the compiler from moving reads or writes of `r` across an asynchronous region (asm statements
// without register operands, such as wgmma.wait_group, do not order register accesses).
__device__ __forceinline__ void register_fence(float& r) {
#ifndef ROOFLAB_EMU
    asm volatile("" : "+f"(r)::"memory");
#else
    (void)r;
#endif
}

__device__ __forceinline__ void register_fence(uint32_t& r) {
#ifndef ROOFLAB_EMU
    asm volatile("" : "+r"(r)::"memory");
#else
    (void)r;
#endif
}

#ifndef ROOFLAB_EMU

// ---- asynchronous copies (sm_80+) --------------------------------------------------------------

// cp.async.cg.shared.global [dst], [src], 16, src_size: bytes past src_size are zero-filled
// (src_size 0: nothing is read).
__device__ __forceinline__ void cp_async_cg_16(uint32_t dst, const void* src, int src_size) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_size) : "memory");
}

__device__ __forceinline__ void cp_async_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// cp.async.wait_group N: all but the newest N committed groups have landed (for this thread).
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ---- warp-wide matrix loads and MMA (sm_80+) ---------------------------------------------------

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 d, a, b, d (accumulates in place).
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- conversions and special functions ---------------------------------------------------------

// cvt.rn.bf16x2.f32 d, a, b: a rounded into the HIGH half of d, b into the low half.
__device__ __forceinline__ uint32_t cvt_rn_bf16x2_f32(float a, float b) {
    uint32_t d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(a), "f"(b));
    return d;
}

__device__ __forceinline__ uint32_t cvt_rn_f16x2_f32(float a, float b) {
    uint32_t d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(d) : "f"(a), "f"(b));
    return d;
}

__device__ __forceinline__ float ex2_approx_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// ---- warpgroup MMA (sm_90a) --------------------------------------------------------------------
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit_group() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_group_0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async_shared_cta() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void wgmma_wait_group_1() { asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory"); }

// ---- mbarriers (sm_90): arrival counts plus a transaction (byte) count per phase ----------------

// mbarrier.init.shared::cta.b64 [bar], count: phase 0, `count` arrivals expected per phase.
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the initialised mbarriers visible to the other threads and to the async proxy (TMA).
__device__ __forceinline__ void fence_mbarrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// mbarrier.arrive.shared::cta.b64 _, [bar]: one arrival (release semantics).
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// mbarrier.arrive.expect_tx.shared::cta.b64 _, [bar], bytes: expect `bytes` more of this phase's
// transactions (TMA copies completing on it), then one arrival.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// mbarrier.try_wait.parity.shared::cta.b64 p, [bar], parity: true once the phase of parity `parity`
// has completed (acquire semantics); false after a hardware-chosen time limit, so callers loop.
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint32_t bar, uint32_t parity) {
    uint32_t done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    return done != 0;
}

// ---- TMA (sm_90) --------------------------------------------------------------------------------

// cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
//     [dst], [map, {c0, c1, c2}], [bar]:
// the box of the tensor map at coordinates (c0 innermost) copied to shared memory at `dst`, laid out
// (and swizzled) as the map says; elements outside the tensor read as zero; the whole box's bytes
// complete on `bar`. `map` is the generic address of a __grid_constant__ kernel parameter.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2) {
    asm volatile(
        "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
        "[%5];\n" ::"r"(dst),
        "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
        : "memory");
}

// ---- named barriers and register reallocation ---------------------------------------------------

// bar.sync id, threads: waits until `threads` (a multiple of 32) have arrived at barrier `id`.
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// bar.arrive id, threads: counts this warp's threads at barrier `id` without waiting.
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// setmaxnreg.{inc,dec}.sync.aligned.u32 N: the warpgroup's per-thread register budget becomes N
// (every warp of the warpgroup executes it).
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}

// wgmma.mma_async, once per element type (operand lists written out by a generator). The shapes used:
//   ss_n128: m64n128k16, A and B from shared memory (descriptors), scale-d = accumulate,
//            imm-scale-a 1, imm-scale-b 1, imm-trans-a 0, imm-trans-b 0;
//   rs_n64 / rs_n128: m64n{64,128}k16, A from registers, scale-d 1, imm-scale-a 1, imm-scale-b 1,
//            imm-trans-b 1.
#define WGMMA_WRAPPERS(T) \
__device__ __forceinline__ void wgmma_ss_n128_##T(float* d, uint64_t a, uint64_t b, int accumulate) { \
    asm volatile( \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n" \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." #T "." #T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
        : "l"(a), "l"(b), "r"(accumulate)); \
} \
__device__ __forceinline__ void wgmma_rs_n64_##T(float* d, const uint32_t* a, uint64_t b) { \
    asm volatile( \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." #T "." #T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)); \
} \
__device__ __forceinline__ void wgmma_rs_n128_##T(float* d, const uint32_t* a, uint64_t b) { \
    asm volatile( \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." #T "." #T " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]) \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1)); \
}


WGMMA_WRAPPERS(bf16)
WGMMA_WRAPPERS(f16)
#undef WGMMA_WRAPPERS

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

#else  // ROOFLAB_EMU: the emulator's model of each instruction (kernels-cuda/emu/cuda_emu.h)

__device__ __forceinline__ void cp_async_cg_16(uint32_t dst, const void* src, int src_size) {
    rl_emu::cp_async(dst, src, 16, src_size);
}
__device__ __forceinline__ void cp_async_commit_group() { rl_emu::cp_async_commit_group(); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
    rl_emu::cp_async_wait_group(N);
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t addr) { rl_emu::ldmatrix_x4(r, addr, false); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) { rl_emu::ldmatrix_x4(r, addr, true); }
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    rl_emu::mma_m16n8k16(rl_emu::Elem::Bf16, d, a, b0, b1);
}
__device__ __forceinline__ void mma_m16n8k16_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    rl_emu::mma_m16n8k16(rl_emu::Elem::F16, d, a, b0, b1);
}
__device__ __forceinline__ uint32_t cvt_rn_bf16x2_f32(float a, float b) {
    return (uint32_t)rl_emu::bf16_bits(a) << 16 | rl_emu::bf16_bits(b);
}
__device__ __forceinline__ uint32_t cvt_rn_f16x2_f32(float a, float b) {
    return (uint32_t)rl_emu::f16_bits(a) << 16 | rl_emu::f16_bits(b);
}
__device__ __forceinline__ float ex2_approx_ftz(float x) { return rl_emu::ex2_approx_ftz(x); }

__device__ __forceinline__ void wgmma_fence() { rl_emu::wgmma_fence(); }
__device__ __forceinline__ void wgmma_commit_group() { rl_emu::wgmma_commit_group(); }
__device__ __forceinline__ void wgmma_wait_group_0() { rl_emu::wgmma_wait_group(0); }
__device__ __forceinline__ void fence_proxy_async_shared_cta() {}
__device__ __forceinline__ void wgmma_wait_group_1() { rl_emu::wgmma_wait_group(1); }
__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) { rl_emu::mbarrier_init(bar, count); }
__device__ __forceinline__ void fence_mbarrier_init() {}
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) { rl_emu::mbarrier_arrive(bar, 0); }
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
    rl_emu::mbarrier_arrive(bar, bytes);
}
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint32_t bar, uint32_t parity) {
    return rl_emu::mbarrier_try_wait_parity(bar, parity);
}
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2) {
    rl_emu::tma_load_3d(dst, map, bar, c0, c1, c2);
}
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
    rl_emu::named_barrier(id, threads, true);
}
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
    rl_emu::named_barrier(id, threads, false);
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
    rl_emu::setmaxnreg(N, true);
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
    rl_emu::setmaxnreg(N, false);
}

#define WGMMA_WRAPPERS(T, ELEM)                                                                           \
    __device__ __forceinline__ void wgmma_ss_n128_##T(float* d, uint64_t a, uint64_t b, int accumulate) { \
        rl_emu::wgmma(ELEM, 128, d, a, nullptr, b, accumulate != 0, 1, 1, 0, 0);                          \
    }                                                                                                     \
    __device__ __forceinline__ void wgmma_rs_n64_##T(float* d, const uint32_t* a, uint64_t b) {           \
        rl_emu::wgmma(ELEM, 64, d, 0, a, b, true, 1, 1, 0, 1);                                            \
    }                                                                                                     \
    __device__ __forceinline__ void wgmma_rs_n128_##T(float* d, const uint32_t* a, uint64_t b) {          \
        rl_emu::wgmma(ELEM, 128, d, 0, a, b, true, 1, 1, 0, 1);                                           \
    }
WGMMA_WRAPPERS(bf16, rl_emu::Elem::Bf16)
WGMMA_WRAPPERS(f16, rl_emu::Elem::F16)
#undef WGMMA_WRAPPERS

#endif  // ROOFLAB_EMU

}  // namespace ptx
