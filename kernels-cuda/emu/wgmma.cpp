// The emulator's model of the warpgroup MMA (wgmma.fence, wgmma.mma_async, wgmma.commit_group,
// wgmma.wait_group), written from the PTX ISA (9.7.15: register fragments, shared-memory matrix layouts,
// matrix descriptors).
//
// Asynchronous, as on the GPU: at issue the operands held in registers (A fragments, the accumulator
// input) and the descriptors are taken and the accumulator registers are filled with NaN; shared memory
// is read and D computed only when a wait_group retires the op's group. So a kernel that reads the
// accumulators before the wait sees NaN, one that writes them (or the A fragments) in flight fails, and
// one that overwrites an operand tile in flight (a TMA copy into a stage still being read) gets NaN or
// the new tile into its products. Ops issued on the accumulators of an op still in flight (the k-steps of
// one product) take its result as their input, in issue order.
#include "runtime.h"

namespace rl_emu {

namespace {

// A shared-memory matrix descriptor: start address, leading (LBO) and stride (SBO) byte offsets (each
// stored as bytes >> 4 in 14 bits) and the swizzle span (0: none; modes 1, 2, 3: 128, 64, 32 bytes).
struct Desc {
    uint32_t start, lbo, sbo, span;
};

const char* decode(uint64_t d, Desc* out) {
    const uint64_t reserved = 0x3ull << 14 | 0x3ull << 30 | 0x7ull << 46 | 0x3ffull << 52;
    if (d & reserved) return "has reserved bits set";
    if ((d >> 49) & 7)
        return "has a non-zero matrix base offset (not modelled: keep swizzled tiles on their pattern's boundary, "
               "1024 bytes for the 128-byte swizzle)";
    static const uint32_t spans[4] = {0, 128, 64, 32};
    *out = {(uint32_t)(d & 0x3fff) << 4, (uint32_t)((d >> 16) & 0x3fff) << 4, (uint32_t)((d >> 32) & 0x3fff) << 4,
            spans[d >> 62]};
    return nullptr;
}

// The swizzle of the ISA's layouts (Swizzle<1|2|3, 4, 3> on byte addresses): 16-byte chunk bits [4, 4+b)
// XOR the bits [7, 7+b) of the absolute shared address (the pattern starts on span * 8 byte boundaries).
uint32_t swizzle(uint32_t addr, uint32_t span) {
    const uint32_t bits = span == 128 ? 7 : span == 64 ? 3 : span == 32 ? 1 : 0;
    return addr ^ (((addr >> 7) & bits) << 4);
}

// Byte address of 16-bit element (mn, k) (k < 16, one instruction's K) in the canonical layouts, with
// T = 8 elements per 16 bytes and W the swizzle span:
//   no swizzle, K-major  ((8,m),(T,2k)):((1T,SBO),(1,LBO))     8 x 16-byte core matrices
//   no swizzle, MN-major ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
//   swizzled,   K-major  ((8,m),(T,2k)):((W/16 T,SBO),(1,T))   row r at (r%8) W + (r/8) SBO, k contiguous
//   swizzled,   MN-major ((T,W/16,m),(8,k)):((1,T,LBO),(W/16 T,SBO))  mn contiguous over W bytes, then LBO;
//                                                              k at (k%8) W + (k/8) SBO
// then the swizzle XOR on the absolute address.
uint32_t operand_addr(const Desc& d, bool mn_major, int mn, int k) {
    const uint32_t W = d.span;
    if (!W) {
        if (!mn_major) return d.start + (mn / 8) * d.sbo + (k / 8) * d.lbo + (mn % 8) * 16 + (k % 8) * 2;
        return d.start + (mn / 8) * d.sbo + (k / 8) * d.lbo + (k % 8) * 16 + (mn % 8) * 2;
    }
    uint32_t a;
    if (!mn_major) a = d.start + (mn % 8) * W + (mn / 8) * d.sbo + k * 2;
    else a = d.start + (mn % (W / 2)) * 2 + (mn / (W / 2)) * d.lbo + (k % 8) * W + (k / 8) * d.sbo;
    return swizzle(a, W);
}

// Checks a shared-memory operand at issue: its descriptor, that one instruction's slice stays inside its
// swizzle rows (the ISA defines no wrap-around), and that every element is inside dynamic shared memory;
// adds the 16-byte chunks it occupies to `chunks`.
void check_operand(uint64_t desc, bool mn_major, int extent, const char* name, std::vector<uint32_t>& chunks) {
    Desc d;
    if (const char* e = decode(desc, &d))
        fail(format("wgmma %s descriptor 0x%llx %s", name, (unsigned long long)desc, e).c_str());
    if (d.span) {
        const uint32_t off = d.start % d.span;
        const uint32_t run = mn_major ? 2 * (uint32_t)std::min(extent, (int)d.span / 2) : 32;
        if (off + run > d.span)
            fail(format("wgmma %s: its %s slice of %u bytes from 0x%x crosses a %u-byte swizzle row (undefined)",
                        name, mn_major ? "MN-major" : "K-major k16", run, d.start, d.span)
                     .c_str());
    }
    uint32_t lo = UINT32_MAX, hi = 0;
    // The contiguous coordinate innermost, so that the elements of one chunk come one after another and
    // are added once (the caller sorts the chunks: eight times fewer to sort).
    const int outer = mn_major ? 16 : extent, inner = mn_major ? extent : 16;
    for (int o = 0; o < outer; ++o)
        for (int i = 0; i < inner; ++i) {
            const uint32_t a = mn_major ? operand_addr(d, true, i, o) : operand_addr(d, false, o, i);
            lo = std::min(lo, a);
            hi = std::max(hi, a);
            if (chunks.empty() || chunks.back() != a >> 4) chunks.push_back(a >> 4);
        }
    shared_at(lo, hi + 2 - lo, name);
}

bool holds_fill(const float* r, int count) {
    for (int i = 0; i < count; ++i)
        if (f32_to_bits(r[i]) != 0xffffffffu) return false;
    return true;
}

// D[:, :N] += A B, each element summing k = 0..15 in order; N a constant so that the column loop vectorises.
template <int N>
void multiply_add(const float (&A)[64][16], const float (&B)[16][128], float (&D)[64][128]) {
    for (int m = 0; m < 64; ++m)
        for (int k = 0; k < 16; ++k)
            for (int col = 0; col < N; ++col) D[m][col] += A[m][k] * B[k][col];
}

// Computes a retired op: reads its shared-memory operands now, writes D to the next op on the same
// accumulators or (the last of a chain) to the accumulator registers.
// wgmma.mma_async.sync.aligned.m64n{N}k16.f32: warp w of the warpgroup owns rows 16w .. 16w+15 of D, as
// the m16n8 C layout repeated over N/8 column tiles (d[4j + r]: row g + 8 (r / 2), column 8j + 2t + r % 2);
// A from registers uses the m16n8k16 A layout per warp.
void retire(WgmmaOp& w) {
    static thread_local float A[64][16], B[16][128], D[64][128];
    const Elem e = w.elem;
    const int N = w.n;
    if (w.a_in_regs) {
        for (int i = 0; i < 128; ++i) {
            if (memcmp(w.a_ptr[i], w.a[i], 16))
                fail(format("the A-fragment registers of thread %d's in-flight wgmma were written before the "
                            "wgmma.wait_group that retires it",
                            i)
                         .c_str());
            const int wp = i / 32, g = (i % 32) / 4, t = i % 4;
            const uint32_t* r = w.a[i];
            for (int h = 0; h < 2; ++h) {
                A[16 * wp + g][2 * t + h] = elem_to_f32(e, (uint16_t)(r[0] >> 16 * h));
                A[16 * wp + g + 8][2 * t + h] = elem_to_f32(e, (uint16_t)(r[1] >> 16 * h));
                A[16 * wp + g][2 * t + 8 + h] = elem_to_f32(e, (uint16_t)(r[2] >> 16 * h));
                A[16 * wp + g + 8][2 * t + 8 + h] = elem_to_f32(e, (uint16_t)(r[3] >> 16 * h));
            }
        }
    } else {
        Desc da;
        decode(w.a_desc, &da);
        for (int m = 0; m < 64; ++m)
            for (int k = 0; k < 16; ++k)
                A[m][k] = elem_to_f32(e, half_at(shared_at(operand_addr(da, w.trans_a, m, k), 2, "wgmma A")));
    }
    Desc db;
    decode(w.b_desc, &db);
    for (int k = 0; k < 16; ++k)
        for (int col = 0; col < N; ++col)
            B[k][col] = elem_to_f32(e, half_at(shared_at(operand_addr(db, w.trans_b, col, k), 2, "wgmma B")));
    for (int i = 0; i < 128; ++i) {
        const int wp = i / 32, g = (i % 32) / 4, t = i % 4;
        for (int x = 0; x < N / 2; ++x) {
            const int j = x / 4, r = x % 4;
            D[16 * wp + g + 8 * (r / 2)][8 * j + 2 * t + r % 2] = w.scale_d ? w.c[i][x] : 0.0f;
        }
    }
    // The scales (+1 or -1) applied once per element, then the product: the emulator's hot loop.
    for (int m = 0; m < 64; ++m)
        for (int k = 0; k < 16; ++k) A[m][k] *= w.scale_a;
    for (int k = 0; k < 16; ++k)
        for (int col = 0; col < N; ++col) B[k][col] *= w.scale_b;
    if (N == 64) multiply_add<64>(A, B, D);
    else multiply_add<128>(A, B, D);
    for (int i = 0; i < 128; ++i) {
        if (!holds_fill(w.acc[i], N / 2))
            fail(format("accumulator registers of thread %d written while a wgmma was in flight (before the "
                        "wgmma.wait_group that retires it)",
                        i)
                     .c_str());
        float* out = w.next ? w.next->c[i] : w.acc[i];
        const int wp = i / 32, g = (i % 32) / 4, t = i % 4;
        for (int x = 0; x < N / 2; ++x) {
            const int j = x / 4, r = x % 4;
            out[x] = D[16 * wp + g + 8 * (r / 2)][8 * j + 2 * t + r % 2];
        }
    }
}

WarpgroupMma& queue_of(const Lane* l) { return current.block->wgmma[l->linear / 128]; }

void require_warpgroup(int count, const char* what) {
    if (count != 128) fail(format("%s with %d of 128 warpgroup threads (the others exited)", what, count).c_str());
}

}  // namespace

void wgmma_fence() { current.lane->wgmma_fenced = true; }

void wgmma_commit_group() {
    collective(Scope::Warpgroup, "wgmma.commit_group", [](Lane* const* l, int count) {
        require_warpgroup(count, "wgmma.commit_group");
        WarpgroupMma& q = queue_of(l[0]);
        q.groups.push_back(q.uncommitted);
        q.uncommitted = 0;
    });
}

// Retires every committed group but the newest n (ops issued and not committed stay in flight).
void wgmma_wait_group(int n) {
    Lane* me = current.lane;
    me->wgmma_fenced = false;
    me->op[0] = n;
    collective(Scope::Warpgroup, "wgmma.wait_group", [](Lane* const* l, int count) {
        require_warpgroup(count, "wgmma.wait_group");
        const int n = l[0]->op[0];
        for (int i = 1; i < count; ++i)
            if (l[i]->op[0] != n) fail("wgmma.wait_group: lanes of one warpgroup wait for different counts");
        WarpgroupMma& q = queue_of(l[0]);
        while (q.groups.size() > (size_t)n) {
            for (size_t k = q.groups.front(); k > 0; --k) {
                retire(q.ops.front());
                q.ops.pop_front();
            }
            q.groups.pop_front();
        }
    });
}

void wgmma(Elem elem, int n, float* d, uint64_t a_desc, const uint32_t* a_regs, uint64_t b_desc, bool scale_d,
           int scale_a, int scale_b, int trans_a, int trans_b) {
    Lane* me = current.lane;
    if (!me->wgmma_fenced) fail("wgmma.mma_async without a wgmma.fence since the last wait_group");
    if (n != 64 && n != 128) fail("wgmma: only N = 64 and 128 are modelled");
    if (a_regs && trans_a) fail("wgmma: imm-trans-a with A in registers (transpose is for shared-memory A only)");
    me->acc = d;
    me->a_frag = a_regs;
    me->in64[0] = a_desc;
    me->in64[1] = b_desc;
    const int op[8] = {(int)elem, n, a_regs != nullptr, scale_d, scale_a, scale_b, trans_a, trans_b};
    memcpy(me->op, op, sizeof op);
    collective(Scope::Warpgroup, "wgmma.mma_async", [](Lane* const* l, int count) {
        require_warpgroup(count, "wgmma.mma_async");
        const int* op = l[0]->op;
        const int N = op[1];
        const bool a_in_regs = op[2];
        for (int i = 1; i < 128; ++i)
            if (memcmp(l[i]->op, op, sizeof l[i]->op) || l[i]->in64[1] != l[0]->in64[1] ||
                (!a_in_regs && l[i]->in64[0] != l[0]->in64[0]))
                fail("wgmma lanes of one warpgroup disagree on the shape, flags or descriptors");
        std::vector<uint32_t> chunks;
        if (!a_in_regs) check_operand(l[0]->in64[0], op[6], 64, "A", chunks);
        check_operand(l[0]->in64[1], op[7], N, "B", chunks);
        std::sort(chunks.begin(), chunks.end());
        chunks.erase(std::unique(chunks.begin(), chunks.end()), chunks.end());

        // The op in flight on the same accumulator registers, if any (the newest: the end of its chain).
        WarpgroupMma& q = queue_of(l[0]);
        WgmmaOp* prev = nullptr;
        for (auto it = q.ops.rbegin(); it != q.ops.rend() && !prev; ++it) {
            int overlapping = 0, same = 0;
            for (int i = 0; i < 128; ++i) {
                const float *x = it->acc[i], *y = l[i]->acc;
                overlapping += x < y + N / 2 && y < x + it->n / 2;
                same += x == y && it->n == N;
            }
            if (!overlapping) continue;
            if (same != 128)
                fail("wgmma accumulator registers overlap those of an in-flight wgmma without being the same "
                     "registers of the same shape (not modelled)");
            prev = &*it;
        }

        q.ops.emplace_back();
        WgmmaOp& w = q.ops.back();
        w.elem = (Elem)op[0];
        w.n = N;
        w.a_in_regs = a_in_regs;
        w.scale_d = op[3];
        w.scale_a = op[4];
        w.scale_b = op[5];
        w.trans_a = op[6];
        w.trans_b = op[7];
        w.a_desc = l[0]->in64[0];
        w.b_desc = l[0]->in64[1];
        w.chunks = std::move(chunks);
        for (int i = 0; i < 128; ++i) {
            w.acc[i] = l[i]->acc;
            w.a_ptr[i] = l[i]->a_frag;
            if (a_in_regs) memcpy(w.a[i], l[i]->a_frag, 16);
            if (prev) {
                if (!holds_fill(w.acc[i], N / 2))
                    fail(format("accumulator registers of thread %d written while a wgmma was in flight (before "
                                "the next wgmma on them)",
                                i)
                             .c_str());
            } else {
                memcpy(w.c[i], w.acc[i], N / 2 * 4);
            }
            memset(w.acc[i], 0xff, N / 2 * 4);  // NaN until a wait_group retires the op
        }
        if (prev) prev->next = &w;
        ++q.uncommitted;
    });
}

void check_wgmma_operands_untouched(uint32_t dst, uint32_t bytes, const char* what) {
    const BlockState* b = current.block;
    const uint32_t first = dst >> 4, last = (dst + bytes - 1) >> 4;
    for (size_t g = 0; g < b->wgmma.size(); ++g)
        for (const WgmmaOp& w : b->wgmma[g].ops) {
            const auto it = std::lower_bound(w.chunks.begin(), w.chunks.end(), first);
            if (it != w.chunks.end() && *it <= last)
                fail(format("%s writes shared bytes 0x%x..0x%x, which hold an operand (at 0x%x) of a wgmma of "
                            "warpgroup %zu still in flight: hand the tile back after the wgmma.wait_group that "
                            "retires it",
                            what, dst, dst + bytes, *it << 4, g)
                         .c_str());
        }
}

std::string wgmma_lane_exit(const BlockState& b, const Lane& l) {
    if (b.wgmma.empty()) return {};
    const WarpgroupMma& q = b.wgmma[l.linear / 128];
    if (q.ops.empty()) return {};
    return format("exited with %zu wgmma ops in flight (%zu not committed): a wgmma.wait_group must retire them "
                  "first",
                  q.ops.size(), q.uncommitted);
}

}  // namespace rl_emu

// Byte address in shared memory of 16-bit element (mn, k), k < 16, of a wgmma operand read through
// descriptor `desc`, K-major (mn_major = 0) or MN-major, swizzle applied; UINT32_MAX for a descriptor
// the emulator refuses or a coordinate out of range. For tests of the layouts against the ISA's examples.
extern "C" uint32_t rl_emu_wgmma_operand_addr(uint64_t desc, int mn_major, int mn, int k) {
    rl_emu::Desc d;
    if (rl_emu::decode(desc, &d) || mn < 0 || mn >= 256 || k < 0 || k >= 16) return UINT32_MAX;
    return rl_emu::operand_addr(d, mn_major != 0, mn, k);
}
