// Hopper layout probes: what the TMA unit writes and what the wgmma tensor cores read, run on operands the
// host laid out byte by byte. They are instruments, not model kernels, so there is no naive baseline.
//
// The prefill kernels v3 and v4 (attention_prefill.cu) assume three things that the CPU emulator cannot
// check, because its models are written from the same PTX ISA text:
//   - where a 128-byte-swizzled TMA box lands in shared memory (v4's Q, K and V tiles);
//   - which shared-memory element a wgmma matrix descriptor selects for each operand element (v3's
//     interleaved layout, v4's 128-byte swizzle; K-major Q and K, N-major V);
//   - which A element each register of a wgmma A fragment holds, and which D element each accumulator
//     register holds (v3's and v4's P in registers, S and O in accumulators).
// The probes run those instructions once each on the host's operands. tests/gpu/layout_probe.rs compares
// the results with the kernels' layouts element by element. On the H100 a mismatch names the element the
// hardware read in place of the one the kernel meant, which points at the wrong descriptor field.
//
//   layout_probe_tma            one TMA box (tensor map and coordinates from the host) into shared
//                               memory, then the box's raw bytes to `out`
//   layout_probe_wgmma_ss_n128  D[64][128] = sum over k16 steps of A B: A and B both from shared-memory
//                               images the host wrote, one host-made descriptor pair per step (B
//                               K-major: v3's and v4's S = Q K^T)
//   layout_probe_wgmma_rs_n128  the same with A from registers (the fragment layout of the PTX ISA,
//   layout_probe_wgmma_rs_n64   loaded from a row-major A) and B N-major (v3's and v4's O += P V, D = 128
//                               and D = 64)
// Elements are f16 (the byte layouts are bf16's too): integer ids up to 2048 are exact in f16, so a
// one-hot operand turns each output element into the id of the one element the hardware read.
//
// Host side: engine/src/kernels/layout_probe.rs (launches, and the kernels' layouts mirrored);
// kernels-cuda/notes/attention_prefill.md §4 says when to run it.

#include "common.cuh"
#include "ptx.cuh"

using namespace rl;

namespace probe {

constexpr int THREADS = 128;  // one warpgroup: the wgmma probes' M of 64 rows

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// The 1024-byte aligned start of dynamic shared memory (the 128-byte swizzle repeats every 1024 bytes and
// reads the row from the address bits, so swizzled tiles must start there; the host adds 1 KB of slack).
struct Smem {
    uint32_t base;
    unsigned char* p;
};
__device__ __forceinline__ Smem smem() {
    ROOFLAB_DYNAMIC_SHARED(unsigned char, raw);
    const uint32_t a = ptx::shared_addr(raw), base = (a + 1023) & ~1023u;
    return {base, raw + (base - a)};
}

__device__ __forceinline__ uint32_t round_up_1k(uint32_t bytes) { return (bytes + 1023) & ~1023u; }

// `bytes` (a multiple of 16) from global memory to shared memory by the whole block, 16 bytes a thread.
__device__ __forceinline__ void copy_in(unsigned char* dst, unsigned long long src, uint32_t bytes) {
    const uint4* s = ptr<const uint4>(src);
    for (uint32_t i = threadIdx.x; i < bytes / 16; i += THREADS) reinterpret_cast<uint4*>(dst)[i] = s[i];
}

// A host-made descriptor, whose start address is relative to its image, moved to where the image sits.
// The start address field is bits 0-13 in 16-byte units; images sit below 112 KB, so it cannot carry over.
__device__ __forceinline__ uint64_t at(uint64_t desc, uint32_t image) { return desc + ((image >> 4) & 0x3FFF); }

// D (m64nN, f32) from the accumulator fragments to out[64][N], in the layout the PTX ISA gives and the
// kernels assume (attention_prefill.cu, wg::store_rows): register x of thread t holds row
// 16 * warp + lane / 4 + 8 * ((x % 4) / 2), column 8 * (x / 4) + 2 * (lane % 4) + x % 2.
template <int N>
__device__ __forceinline__ void store_d(float* out, const float (&d)[N / 2]) {
    const unsigned t = threadIdx.x, w = t / 32, lane = t % 32;
#pragma unroll
    for (int x = 0; x < N / 2; ++x)
        out[(16 * w + lane / 4 + 8 * ((x % 4) / 2)) * N + 8 * (x / 4) + 2 * (lane % 4) + x % 2] = d[x];
}

// The A fragment of k16 step kk from a row-major f16 A[64][16 * k_steps], in the layout the PTX ISA gives
// and the kernels pack P into (wg::rescale_pack): registers 0-3 hold rows r, r + 8, r, r + 8 and columns
// c, c, c + 8, c + 8 (two elements each, the lower column in the low half), r = 16 * warp + lane / 4,
// c = 2 * (lane % 4).
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const uint16_t* in, int k_steps, int kk) {
    const unsigned t = threadIdx.x, r = 16 * (t / 32) + (t % 32) / 4, c = 2 * (t % 4), row_len = 16 * k_steps;
    const auto pair = [&](unsigned row, unsigned col) {
        const uint16_t* e = in + row * row_len + kk * 16 + col;
        return (uint32_t)e[0] | (uint32_t)e[1] << 16;
    };
    a[0] = pair(r, c);
    a[1] = pair(r + 8, c);
    a[2] = pair(r, c + 8);
    a[3] = pair(r + 8, c + 8);
}

// Both probes' common start: the images in shared memory (A's, if any, at the base, B's at the next
// 1024-byte boundary after it), made visible to the tensor cores (the async proxy).
__device__ __forceinline__ void stage(const LayoutProbeMmaParams& p, const Smem& s, bool a_image, uint32_t& a,
                                      uint32_t& b) {
    a = s.base;
    b = s.base + (a_image ? round_up_1k(p.a_bytes) : 0);
    if (a_image) copy_in(s.p, p.a, p.a_bytes);
    copy_in(s.p + (b - s.base), p.b, p.b_bytes);
    ptx::fence_proxy_async_shared_cta();
    __syncthreads();
}

// K k16 steps, unrolled (K is 4 or 8: p.k_steps picks the instantiation).
template <int K>
__device__ __forceinline__ void mma_ss(const LayoutProbeMmaParams& p) {
    const Smem s = smem();
    uint32_t a, b;
    stage(p, s, true, a, b);
    float d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0.0f;
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < K; ++kk) ptx::wgmma_ss_n128_f16(d, at(p.a_desc[kk], a), at(p.b_desc[kk], b), kk > 0);
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group_0();
#pragma unroll
    for (int i = 0; i < 64; ++i) ptx::register_fence(d[i]);
    store_d<128>(ptr<float>(p.out), d);
}

template <int N, int K>
__device__ __forceinline__ void mma_rs(const LayoutProbeMmaParams& p) {
    const Smem s = smem();
    uint32_t a_unused, b;
    stage(p, s, false, a_unused, b);
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) d[i] = 0.0f;
    uint32_t a[K][4];
#pragma unroll
    for (int kk = 0; kk < K; ++kk) load_a(a[kk], ptr<const uint16_t>(p.a), K, kk);
#pragma unroll
    for (int i = 0; i < N / 2; ++i) ptx::register_fence(d[i]);
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < K; ++kk) {
        if constexpr (N == 64) ptx::wgmma_rs_n64_f16(d, a[kk], at(p.b_desc[kk], b));
        else ptx::wgmma_rs_n128_f16(d, a[kk], at(p.b_desc[kk], b));
    }
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group_0();
#pragma unroll
    for (int i = 0; i < N / 2; ++i) ptx::register_fence(d[i]);
    store_d<N>(ptr<float>(p.out), d);
}

// One box, as v4's producer loads a tile (one thread issues it, the bytes complete an mbarrier), then
// every thread copies the box's bytes out as they landed.
__device__ __forceinline__ void tma_box(const LayoutProbeTmaParams& p) {
    const Smem s = smem();
    const uint32_t bar = s.base + round_up_1k(p.bytes);
    if (threadIdx.x == 0) {
        ptx::mbarrier_init(bar, 1);
        ptx::fence_mbarrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        ptx::mbarrier_arrive_expect_tx(bar, p.bytes);
        ptx::tma_load_3d(s.base, &p.map, bar, p.x, p.y, p.z);
    }
    // A copy that never completes traps (a launch error the test reports) instead of hanging the GPU.
    for (unsigned polls = 0; !ptx::mbarrier_try_wait_parity(bar, 0);)
        if (++polls == 1u << 26) __trap();
    uint4* out = ptr<uint4>(p.out);
    for (uint32_t i = threadIdx.x; i < p.bytes / 16; i += THREADS) out[i] = reinterpret_cast<const uint4*>(s.p)[i];
}

// The probes' bodies for p.k_steps = 4 or 8 (the host allows nothing else).
template <int K>
__device__ __forceinline__ void mma(const LayoutProbeMmaParams& p, int n, bool a_in_registers) {
    if (!a_in_registers) mma_ss<K>(p);
    else if (n == 64) mma_rs<64, K>(p);
    else mma_rs<128, K>(p);
}
__device__ __forceinline__ void mma(const LayoutProbeMmaParams& p, int n, bool a_in_registers) {
    if (p.k_steps == 4) mma<4>(p, n, a_in_registers);
    else mma<8>(p, n, a_in_registers);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace probe

// block 128 threads, one block; dynamic shared memory 1024 + the images (wgmma) or + the box and 8 bytes
// (TMA), as engine/src/kernels/layout_probe.rs computes it. In the sm_80 PTX the entries exist (the ABI
// table lists every entry in both sets) but trap.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define ROOFLAB_PROBE_BODY(call) call;
#else
#define ROOFLAB_PROBE_BODY(call) __trap();
#endif

extern "C" __global__ void __launch_bounds__(probe::THREADS, 1)
    layout_probe_tma(const __grid_constant__ LayoutProbeTmaParams p) {
    ROOFLAB_PROBE_BODY(probe::tma_box(p))
}

extern "C" __global__ void __launch_bounds__(probe::THREADS, 1) layout_probe_wgmma_ss_n128(const LayoutProbeMmaParams p) {
    ROOFLAB_PROBE_BODY(probe::mma(p, 128, false))
}

extern "C" __global__ void __launch_bounds__(probe::THREADS, 1) layout_probe_wgmma_rs_n128(const LayoutProbeMmaParams p) {
    ROOFLAB_PROBE_BODY(probe::mma(p, 128, true))
}

extern "C" __global__ void __launch_bounds__(probe::THREADS, 1) layout_probe_wgmma_rs_n64(const LayoutProbeMmaParams p) {
    ROOFLAB_PROBE_BODY(probe::mma(p, 64, true))
}
