// Emulator-only kernels that exercise the Hopper instruction models (hopper.cpp, wgmma.cpp) one rule at a
// time, for the unit tests in engine/src/emu.rs: a TMA + wgmma product checked against the host, the raw
// bytes a swizzled TMA copy leaves in shared memory, and one small kernel per mistake the emulator must
// catch (each `mode` of rl_emu_selftest_fault). They call the same ptx.cuh functions as the kernels.
#include "params.h"
#include "ptx.cuh"
#include "entries.h"

namespace selftest {

// The parameters of both entries (engine/src/emu.rs mirrors them).
struct __attribute__((aligned(64))) Params {
    RlTensorMap a;           // rl_emu_selftest_gemm: A {64 (k), 1, rows}; fault modes: any 64 x 64 bf16 map
    RlTensorMap b;           // B: K-major {64 (k), 1, 128 (n)} or MN-major {128 (n), 1, 64 (k)}
    unsigned long long out;  // f32 results
    unsigned long long in;   // bf16 [64][64]: A row-major, for A from registers
    int mode, arg;
};
static_assert(sizeof(Params) == 320, "engine/src/emu.rs SelftestParams");

constexpr uint64_t SW128 = 1ull << 62;
constexpr uint32_t A_BYTES = 64 * 64 * 2, B_BYTES = 128 * 64 * 2;

uint64_t desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)((lbo & 0x3ffff) >> 4) << 16 |
           (uint64_t)((sbo & 0x3ffff) >> 4) << 32;
}

// The 1024-aligned start of dynamic shared memory, as a shared address and a pointer.
struct Smem {
    uint32_t base;
    unsigned char* p;
};
Smem smem() {
    ROOFLAB_DYNAMIC_SHARED(unsigned char, raw);
    const uint32_t a = ptx::shared_addr(raw), base = (a + 1023) & ~1023u;
    return {base, raw + (base - a)};
}

void wait(uint32_t bar, uint32_t parity) {
    while (!ptx::mbarrier_try_wait_parity(bar, parity)) {
    }
}

// D (m64n128, f32) from the accumulator fragments to out[64][128].
void store_d(float* out, const float (&d)[64]) {
    const unsigned t = threadIdx.x % 128, w = t / 32, g = (t % 32) / 4, q = t % 4;
    for (int x = 0; x < 64; ++x) {
        const int j = x / 4, r = x % 4;
        out[(16 * w + g + 8 * (r / 2)) * 128 + 8 * j + 2 * q + r % 2] = d[x];
    }
}

// 128 threads. mode 0: D = A B^T, A and B K-major (B as [128 n][64 k]), both through TMA with the 128-byte
// swizzle, the k16 steps advancing the descriptors' start by 32 bytes; A's box starts at row `arg` (rows
// outside the tensor read as zero). mode 1: D = A B, A from registers (`in`), B MN-major ([64 k][128 n] in
// two 64-column panels). mode 2: A's box copied, then its raw shared bytes to out (as 2048 words).
void gemm(const Params& p) {
    const Smem s = smem();
    const uint32_t a_tile = s.base, b_tile = s.base + A_BYTES, bar = s.base + A_BYTES + B_BYTES;
    const unsigned t = threadIdx.x;
    if (t == 0) {
        ptx::mbarrier_init(bar, 1);
        ptx::fence_mbarrier_init();
    }
    __syncthreads();
    if (t == 0) {
        if (p.mode == 0) {
            ptx::mbarrier_arrive_expect_tx(bar, A_BYTES + B_BYTES);
            ptx::tma_load_3d(a_tile, &p.a, bar, 0, 0, p.arg);
            ptx::tma_load_3d(b_tile, &p.b, bar, 0, 0, 0);
        } else if (p.mode == 1) {
            ptx::mbarrier_arrive_expect_tx(bar, B_BYTES);
            ptx::tma_load_3d(b_tile, &p.b, bar, 0, 0, 0);
            ptx::tma_load_3d(b_tile + A_BYTES, &p.b, bar, 64, 0, 0);
        } else {
            ptx::mbarrier_arrive_expect_tx(bar, A_BYTES);
            ptx::tma_load_3d(a_tile, &p.a, bar, 0, 0, p.arg);
        }
    }
    wait(bar, 0);
    float* out = reinterpret_cast<float*>(p.out);
    if (p.mode == 2) {
        for (unsigned i = t; i < A_BYTES / 4; i += 128) memcpy(out + i, s.p + 4 * i, 4);
        return;
    }
    float d[64];
    for (float& x : d) x = 0.0f;
    uint32_t a[4][4];
    ptx::wgmma_fence();
    if (p.mode == 0) {
        for (int kk = 0; kk < 4; ++kk) {
            const uint64_t ad = desc(a_tile + kk * 32, 16, 1024) | SW128, bd = desc(b_tile + kk * 32, 16, 1024) | SW128;
            ptx::wgmma_ss_n128_bf16(d, ad, bd, kk > 0);
        }
    } else {
        const uint16_t* in = reinterpret_cast<const uint16_t*>(p.in);
        const unsigned w = t / 32, g = (t % 32) / 4, q = t % 4;
        for (int kk = 0; kk < 4; ++kk) {
            const auto pair = [&](unsigned row, unsigned col) {
                return (uint32_t)in[row * 64 + kk * 16 + col] | (uint32_t)in[row * 64 + kk * 16 + col + 1] << 16;
            };
            a[kk][0] = pair(16 * w + g, 2 * q);
            a[kk][1] = pair(16 * w + g + 8, 2 * q);
            a[kk][2] = pair(16 * w + g, 2 * q + 8);
            a[kk][3] = pair(16 * w + g + 8, 2 * q + 8);
            ptx::wgmma_rs_n128_bf16(d, a[kk], desc(b_tile + kk * 16 * 128, A_BYTES, 1024) | SW128);
        }
    }
    ptx::wgmma_commit_group();
    ptx::wgmma_wait_group_0();
    store_d(out, d);
}

// No-swizzle K-major operands in shared memory for the wgmma fault modes: A (64 x 16) at base, B (128 x 16)
// at base + 2048, zeroed first so products are 0.
void zero_operands(const Smem& s) {
    for (unsigned i = threadIdx.x; i < 6144 / 4; i += blockDim.x) memset(s.p + 4 * i, 0, 4);
    __syncthreads();
}
uint64_t a_nosw(const Smem& s) { return desc(s.base, 1024, 128); }
uint64_t b_nosw(const Smem& s) { return desc(s.base + 2048, 2048, 128); }

// One kernel per mistake (and per rule that must hold); engine/src/emu.rs lists what each must report.
void fault(const Params& p) {
    const Smem s = smem();
    const unsigned t = threadIdx.x, warp = t / 32;
    const uint32_t bar = s.base + 8192;
    float* out = reinterpret_cast<float*>(p.out);
    float d[64], d2[64];
    uint32_t a[4] = {0, 0, 0, 0};
    for (int i = 0; i < 64; ++i) d[i] = d2[i] = 0.0f;
    const auto init = [&](uint32_t count) {
        if (t == 0) ptx::mbarrier_init(bar, count);
        __syncthreads();
    };
    switch (p.mode) {
        case 1:  // wait on an mbarrier never initialised
            wait(bar, 0);
            break;
        case 2:  // nobody arrives
            init(1);
            wait(bar, 0);
            break;
        case 3:  // a store over the mbarrier
            init(1);
            if (t == 0) {
                memset(s.p + 8192, 0, 8);
                ptx::mbarrier_arrive(bar);
            }
            break;
        case 4:  // a copy nobody waits for
            init(1);
            if (t == 0) {
                ptx::mbarrier_arrive_expect_tx(bar, A_BYTES);
                ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
            }
            break;
        case 5:  // expect_tx fewer bytes than the copy
            init(1);
            if (t == 0) {
                ptx::mbarrier_arrive_expect_tx(bar, A_BYTES / 2);
                ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
            }
            wait(bar, 0);
            break;
        case 6:  // the box read before and after the wait
            init(1);
            if (t == 0) {
                ptx::mbarrier_arrive_expect_tx(bar, A_BYTES);
                ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
            }
            memcpy(out + t, s.p + 4 * t, 4);
            wait(bar, 0);
            memcpy(out + 32 + t, s.p + 4 * t, 4);
            break;
        case 7:  // accumulator written in flight
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, a_nosw(s), b_nosw(s), 0);
            ptx::wgmma_commit_group();
            d[0] = 1.0f;
            ptx::wgmma_wait_group_0();
            break;
        case 8:  // exit with an op in flight
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, a_nosw(s), b_nosw(s), 0);
            ptx::wgmma_commit_group();
            return;
        case 9:  // accumulator read before and after the wait
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, a_nosw(s), b_nosw(s), 0);
            ptx::wgmma_commit_group();
            out[t] = d[5];
            ptx::wgmma_wait_group_0();
            out[128 + t] = d[5];
            break;
        case 10:  // wait_group 1 retires the older group only; an uncommitted op stays in flight
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, a_nosw(s), b_nosw(s), 0);
            ptx::wgmma_commit_group();
            ptx::wgmma_ss_n128_bf16(d2, a_nosw(s), b_nosw(s), 0);
            ptx::wgmma_commit_group();
            ptx::wgmma_wait_group_1();
            out[t] = d[0];
            out[128 + t] = d2[0];
            ptx::wgmma_wait_group_0();
            out[256 + t] = d2[0];
            break;
        case 11:  // a warp split between two named barriers
            if (t % 32 < 16) ptx::named_barrier_sync(1, 64);
            else ptx::named_barrier_sync(2, 64);
            break;
        case 12:  // bar.sync 1 short of threads while the other warp waits at __syncthreads
            if (warp == 0) ptx::named_barrier_sync(1, 64);
            __syncthreads();
            break;
        case 13:  // named barriers passing data between warps, twice (the count resets)
            for (int round = 0; round < 2; ++round) {
                if (warp == 1) {
                    reinterpret_cast<volatile float*>(s.p)[t % 32] = (float)(round * 100 + t % 32);
                    ptx::named_barrier_arrive(1, 64);
                    ptx::named_barrier_sync(2, 64);
                } else {
                    ptx::named_barrier_sync(1, 64);
                    out[round * 32 + t] = reinterpret_cast<volatile float*>(s.p)[t];
                    ptx::named_barrier_arrive(2, 64);
                }
            }
            break;
        case 14:  // a register count setmaxnreg cannot take
            rl_emu::setmaxnreg(20, true);
            break;
        case 15:  // setmaxnreg after some of the warpgroup exited
            if (t >= 96) return;
            ptx::setmaxnreg_inc<240>();
            break;
        case 16:  // init of an mbarrier another thread waits on
            init(1);
            if (warp == 1) {
                ptx::named_barrier_arrive(1, 64);
                wait(bar, 0);
            } else {
                ptx::named_barrier_sync(1, 64);
                if (t == 0) ptx::mbarrier_init(bar, 1);
            }
            break;
        case 17:  // a 128-byte-swizzled box not 1024-byte aligned
            init(1);
            if (t == 0) ptx::tma_load_3d(s.base + 128, &p.a, bar, 0, 0, 0);
            break;
        case 18:  // parity 1 of a fresh mbarrier: the phase before phase 0 counts as complete
            init(1);
            wait(bar, 1);
            out[t] = 1.0f;
            break;
        case 19:  // bar.sync 0 with a count
            ptx::named_barrier_sync(0, 32);
            break;
        case 20:  // a phase left half done
            init(2);
            if (t == 0) ptx::mbarrier_arrive(bar);
            break;
        case 21:  // A fragment written in flight
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_rs_n128_bf16(d, a, b_nosw(s));
            ptx::wgmma_commit_group();
            a[0] = 0x3f803f80u;
            ptx::wgmma_wait_group_0();
            break;
        case 22:  // a descriptor with a base offset
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, a_nosw(s) | 1ull << 49 | SW128, b_nosw(s), 0);
            break;
        case 23:  // a K-major k16 step crossing its 128-byte swizzle row
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, desc(s.base + 112, 16, 1024) | SW128, b_nosw(s), 0);
            break;
        case 24:  // more arrivals than the count
            init(1);
            if (t == 0) {
                ptx::mbarrier_arrive_expect_tx(bar, 16);
                ptx::mbarrier_arrive(bar);
            }
            break;
        case 25:  // a TMA copy into the operands of a wgmma in flight (a stage handed back too early)
            init(1);
            zero_operands(s);
            ptx::wgmma_fence();
            ptx::wgmma_ss_n128_bf16(d, a_nosw(s), b_nosw(s), 0);
            ptx::wgmma_commit_group();
            if (t == 0) {
                ptx::mbarrier_arrive_expect_tx(bar, A_BYTES);
                ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
            }
            wait(bar, 0);
            ptx::wgmma_wait_group_0();
            break;
        case 26:  // a second copy into a box whose first copy has not landed
            init(1);
            if (t == 0) {
                ptx::mbarrier_arrive_expect_tx(bar, 2 * A_BYTES);
                ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
                ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
            }
            wait(bar, 0);
            break;
        case 27: {  // v4's ragged tile in small: warp 0 lands a box, zeroes its first 32 words and hands it
                    // over through a second mbarrier; arg 1: the consumer warp skips that wait (a race)
            const uint32_t fixed = bar + 8;
            if (t == 0) ptx::mbarrier_init(fixed, 1);
            init(1);
            if (warp == 0) {
                if (t == 0) {
                    ptx::mbarrier_arrive_expect_tx(bar, A_BYTES);
                    ptx::tma_load_3d(s.base, &p.a, bar, 0, 0, 0);
                }
                __syncwarp();
                wait(bar, 0);
                memset(s.p + 4 * t, 0, 4);
                __syncwarp();
                if (t == 0) ptx::mbarrier_arrive(fixed);
            } else {
                wait(bar, 0);
                if (p.arg == 0) wait(fixed, 0);
                memcpy(out + (t - 32), s.p + 4 * (t - 32), 4);
            }
            break;
        }
        case 28: {  // the order the schedule runs a block's threads in, two rounds apart: each thread appends
                    // its index, meets the others at a barrier, appends it again (a block's threads are fibers
                    // on one OS thread, so the shared counter needs no atomics)
            uint32_t* next = reinterpret_cast<uint32_t*>(s.p + 16384);
            if (t == 0) *next = 0;
            __syncthreads();
            out[(*next)++] = (float)t;
            __syncthreads();
            out[(*next)++] = (float)t;
            break;
        }
    }
}

}  // namespace selftest

extern "C" __global__ void rl_emu_selftest_gemm(const __grid_constant__ selftest::Params p) { selftest::gemm(p); }
extern "C" __global__ void rl_emu_selftest_fault(const __grid_constant__ selftest::Params p) { selftest::fault(p); }

ROOFLAB_EMU_FAMILY(selftest, ROOFLAB_EMU_ENTRY(rl_emu_selftest_gemm), ROOFLAB_EMU_ENTRY(rl_emu_selftest_fault))
