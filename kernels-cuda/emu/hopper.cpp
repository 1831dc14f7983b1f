// The emulator's models of the Hopper synchronisation and copy instructions in ptx.cuh, written from the
// PTX ISA: mbarrier (init, arrive[.expect_tx], try_wait.parity), cp.async.bulk.tensor (TMA, tiled, with
// the tensor map from rl_emu_encode_tensor_map), bar.sync / bar.arrive with a thread count (named
// barriers) and setmaxnreg; plus the scheduler hooks that report what blocked threads wait for.
//
// The models fail (naming kernel, block and thread) where the ISA leaves behaviour undefined, rather
// than pick one: an mbarrier used before its init or after its 8 bytes were overwritten, re-initialised,
// given more arrivals or transaction bytes than a phase expects; a TMA copy to a misaligned or
// out-of-range box, or with a swizzle the emulator does not model; a block that ends with copies or
// a half-done phase; a warp whose lanes split at a named barrier.
#include <stdio.h>

#include "runtime.h"

namespace rl_emu {

namespace {

constexpr uint32_t MAX_COUNT = (1u << 20) - 1;  // arrival and tx-count limit of an mbarrier
constexpr uint64_t MAP_MAGIC = 0x31706d54656d4c52ull;  // "RLemTmp1"

// What an initialised mbarrier's 8 shared bytes hold: stores and TMA copies over it change them.
uint64_t marker(uint32_t addr) { return 0x7261627265626d2eull ^ ((uint64_t)addr << 24); }

Mbarrier* find_barrier(BlockState* b, uint32_t addr) {
    for (Mbarrier& m : b->mbarriers)
        if (m.addr == addr) return &m;
    return nullptr;
}

// The mbarrier at `bar` for operation `op`: 8-byte aligned, initialised, its marker intact.
Mbarrier& barrier_for(uint32_t bar, const char* op) {
    if (bar % 8) fail(format("%s on shared address 0x%x: an mbarrier object is 8-byte aligned", op, bar).c_str());
    const unsigned char* p = shared_at(bar, 8, op);
    Mbarrier* m = find_barrier(current.block, bar);
    if (!m) fail(format("%s on shared address 0x%x, which holds no initialised mbarrier", op, bar).c_str());
    uint64_t v;
    memcpy(&v, p, 8);
    if (v != marker(bar))
        fail(format("%s: the mbarrier at 0x%x was overwritten since its init (a store or a TMA copy over its 8 "
                    "bytes)",
                    op, bar)
                 .c_str());
    return *m;
}

// Lanes blocked on `m` whose phase has now completed go on, first (BlockState::released), in the
// schedule's order: a reversed run releases the highest thread first. A starved lane (warp 0 when the
// schedule starves it) only becomes runnable: it waits until no other thread can run.
void wake(BlockState* b, const Mbarrier& m) {
    const int starved = starved_lanes(*b);
    for (int k = 0; k < b->n; ++k) {
        const int i = b->order[k];
        Lane& l = b->lanes[i];
        if (l.state == Lane::Waiting && l.wait_kind == WaitKind::Mbarrier && l.wait_addr == m.addr &&
            (m.phase & 1) != l.wait_parity) {
            l.wait_kind = WaitKind::None;  // released: try_wait returns true when it resumes
            l.state = Lane::Runnable;
            if (i >= starved) b->released.push_back(i);
        }
    }
}

// After an arrival or a complete-tx: the phase completes when no arrival is pending and the tx-count is 0.
void settle(BlockState* b, Mbarrier& m) {
    if (m.tx > (int64_t)MAX_COUNT || m.tx < -(int64_t)MAX_COUNT)
        fail(format("mbarrier 0x%x: tx-count %lld outside the ISA's range +-(2^20 - 1)", m.addr, (long long)m.tx)
                 .c_str());
    if (m.pending == 0 && m.tx < 0)
        fail(format("mbarrier 0x%x: the TMA copies completed %lld bytes more than the phase's expect_tx announced",
                    m.addr, (long long)-m.tx)
                 .c_str());
    if (m.pending == 0 && m.tx == 0) {
        ++m.phase;
        m.pending = m.expected;
        wake(b, m);
    }
}

uint32_t swizzle(uint32_t addr, uint32_t span) {
    switch (span) {
        case 128: return addr ^ (((addr >> 7) & 7) << 4);
        case 64: return addr ^ (((addr >> 7) & 3) << 4);
        case 32: return addr ^ (((addr >> 7) & 1) << 4);
        default: return addr;
    }
}

// Writes one copy's box into shared memory: elements read from global memory now, the box row-major
// (dimension 0 contiguous), each byte address swizzled; elements outside the tensor are zero.
void land(BlockState* b, const TmaCopy& c) {
    const TensorMap& t = c.map;
    const uint32_t e = t.elem_bytes;
    uint32_t off = 0;
    for (uint32_t i2 = 0; i2 < t.box[2]; ++i2)
        for (uint32_t i1 = 0; i1 < t.box[1]; ++i1)
            for (uint32_t i0 = 0; i0 < t.box[0]; ++i0, off += e) {
                const int64_t g0 = (int64_t)c.coord[0] + i0, g1 = (int64_t)c.coord[1] + i1,
                              g2 = (int64_t)c.coord[2] + i2;
                unsigned char* s = b->smem + (swizzle(c.dst + off, t.swizzle) - SHARED_BASE);
                const bool in = g0 >= 0 && (uint64_t)g0 < t.dims[0] && g1 >= 0 && (uint64_t)g1 < t.dims[1] &&
                                g2 >= 0 && (uint64_t)g2 < t.dims[2];
                if (!in) {
                    memset(s, 0, e);
                    continue;
                }
                const uint64_t src = t.address + (uint64_t)g0 * e + (uint64_t)g1 * t.strides[0] +
                                     (uint64_t)g2 * t.strides[1];
                memcpy(s, reinterpret_cast<const void*>(src), e);
            }
}

// Lands every copy pending on `m` (complete-tx of each box's bytes), then settles the phase.
void land_all(BlockState* b, Mbarrier& m) {
    if (m.copies.empty()) return;
    std::vector<TmaCopy> copies;
    copies.swap(m.copies);
    for (const TmaCopy& c : copies) {
        land(b, c);
        m.tx -= c.bytes;
    }
    settle(b, m);
}

const char* decode_map(const void* p, TensorMap* t) {
    uint64_t w[16];
    memcpy(w, p, sizeof w);
    if (w[0] != MAP_MAGIC) return "is not a tensor map made by rl_emu_encode_tensor_map (Launcher::tensor_map)";
    uint64_t sum = 0;
    for (int i = 0; i < 15; ++i) sum = (sum ^ w[i]) * 0x100000001b3ull;
    if (w[15] != sum) return "is a corrupted tensor map (its checksum does not match)";
    t->address = w[1];
    t->elem_bytes = w[2] & 0xff;
    t->rank = (w[2] >> 8) & 0xff;
    t->swizzle = (w[2] >> 16) & 0xffff;
    for (int i = 0; i < 5; ++i) t->dims[i] = w[3 + i];
    for (int i = 0; i < 4; ++i) t->strides[i] = w[8 + i];
    for (int i = 0; i < 4; ++i) t->box[i] = (w[12] >> (16 * i)) & 0xffff;
    t->box[4] = w[13] & 0xffff;
    return nullptr;
}

const char* scope_name(Scope s) { return s == Scope::Warp ? "warp" : s == Scope::Warpgroup ? "warpgroup" : "block"; }

}  // namespace

// ---- mbarrier ------------------------------------------------------------------------------------

void mbarrier_init(uint32_t bar, uint32_t count) {
    const char* op = "mbarrier.init";
    if (bar % 8) fail(format("%s on shared address 0x%x: an mbarrier object is 8-byte aligned", op, bar).c_str());
    unsigned char* p = shared_at(bar, 8, op);
    if (count < 1 || count > MAX_COUNT) fail(format("%s 0x%x with count %u (1 to 2^20 - 1)", op, bar, count).c_str());
    BlockState* b = current.block;
    if (find_barrier(b, bar)) {
        for (int i = 0; i < b->n; ++i) {
            const Lane& l = b->lanes[i];
            if (l.state == Lane::Waiting && l.wait_kind == WaitKind::Mbarrier && l.wait_addr == bar)
                fail(format("%s of the mbarrier at 0x%x while thread %d waits on it", op, bar, i).c_str());
        }
        fail(format("%s of 0x%x, which already holds an initialised mbarrier (undefined without mbarrier.inval, "
                    "which is not modelled)",
                    op, bar)
                 .c_str());
    }
    const uint64_t v = marker(bar);
    memcpy(p, &v, 8);
    b->mbarriers.push_back(Mbarrier{bar, count, count, 0, 0, {}});
}

void mbarrier_arrive(uint32_t bar, uint32_t tx_bytes) {
    Mbarrier& m = barrier_for(bar, tx_bytes ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive");
    if (tx_bytes > MAX_COUNT)
        fail(format("mbarrier.arrive.expect_tx of %u bytes on 0x%x (at most 2^20 - 1)", tx_bytes, bar).c_str());
    if (m.pending == 0)
        fail(format("mbarrier.arrive on 0x%x: all %u arrivals of the current phase were already made (it waits for "
                    "%lld transaction bytes)",
                    bar, m.expected, (long long)m.tx)
                 .c_str());
    m.tx += tx_bytes;  // expect-tx, then the arrive-on
    --m.pending;
    settle(current.block, m);
    yield_to_released();
}

bool mbarrier_try_wait_parity(uint32_t bar, uint32_t parity) {
    Lane* me = current.lane;
    BlockState* b = current.block;
    if (parity > 1) fail(format("mbarrier.try_wait.parity on 0x%x with parity %u (0 or 1)", bar, parity).c_str());
    for (;;) {
        Mbarrier& m = barrier_for(bar, "mbarrier.try_wait.parity");
        land_all(b, m);  // the copies this phase tracks land when a thread waits on it
        if ((m.phase & 1) != parity) {
            yield_to_released();  // others this landing released
            // Starving warp 0, a wait that succeeds at once still lets the others run first: the producer
            // that lands its own copy does not go on (to fix the tile up, say) before the consumers could.
            if (b->launch->starve_warp0) preempt();
            return true;
        }
        me->wait_kind = WaitKind::Mbarrier;
        me->wait_addr = bar;
        me->wait_parity = parity;
        block_lane();
        // Woken by the phase's completion: true, even if the phase moved on again before this thread ran
        // (a polling thread would have seen the completion). Else woken by the scheduler to land the
        // copies: poll again.
        if (me->wait_kind == WaitKind::None) return true;
    }
}

// ---- TMA -------------------------------------------------------------------------------------------

void tma_load_3d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2) {
    const char* op = "cp.async.bulk.tensor.3d";
    TensorMap t;
    if (const char* e = decode_map(map, &t)) fail(format("%s: the map operand %s", op, e).c_str());
    if (t.rank != 3) fail(format("%s with a rank-%u tensor map", op, t.rank).c_str());
    const uint32_t bytes = t.box[0] * t.box[1] * t.box[2] * t.elem_bytes;
    const uint32_t align = t.swizzle == 128 ? 1024 : 128;
    if (dst % align)
        fail(format("%s destination 0x%x is not %u-byte aligned (%s)", op, dst, align,
                    t.swizzle == 128 ? "the 128-byte swizzle pattern repeats every 1024 bytes" : "TMA destinations")
                 .c_str());
    if (t.swizzle && t.box[0] * t.elem_bytes != t.swizzle)
        fail(format("%s: an inner box of %u bytes with the %u-byte swizzle is not modelled (only boxes whose rows "
                    "are exactly the swizzle span)",
                    op, t.box[0] * t.elem_bytes, t.swizzle)
                 .c_str());
    unsigned char* d = shared_at(dst, bytes, op);
    Mbarrier& m = barrier_for(bar, op);
    check_wgmma_operands_untouched(dst, bytes, op);
    for (const Mbarrier& other : current.block->mbarriers)
        for (const TmaCopy& c : other.copies)
            if (dst < c.dst + c.bytes && c.dst < dst + bytes)
                fail(format("%s into shared bytes 0x%x..0x%x overlaps the box of a copy not landed yet (0x%x..0x%x, "
                            "on the mbarrier at 0x%x, which no thread has waited on since)",
                            op, dst, dst + bytes, c.dst, c.dst + c.bytes, other.addr)
                         .c_str());
    memset(d, 0xff, bytes);  // NaN until it lands: a read before the mbarrier wait sees it
    TmaCopy c{t, dst, {c0, c1, c2, 0, 0}, bytes, current.lane->linear};
    m.copies.push_back(c);
}

// ---- named barriers and setmaxnreg ----------------------------------------------------------------

void named_barrier(uint32_t id, uint32_t threads, bool wait) {
    const char* op = wait ? "bar.sync" : "bar.arrive";
    BlockState* b = current.block;
    if (id == 0 || id > 15)
        fail(format("%s %u: named barriers are 1 to 15 (0 is __syncthreads', not modelled with a count)", op, id)
                 .c_str());
    const uint32_t block_threads = (uint32_t)(b->n + 31) / 32 * 32;
    if (threads == 0 || threads % 32 || threads > block_threads)
        fail(format("%s %u, %u: the thread count must be a non-zero multiple of 32, at most the block's %u", op, id,
                    threads, block_threads)
                 .c_str());
    Lane* me = current.lane;
    me->in[0] = id;
    me->in[1] = threads;
    me->op[0] = wait;
    // A warp's lanes reach the barrier together (the warp counts 32 arrivals), so it is a warp collective.
    collective(Scope::Warp, op, [](Lane* const* l, int n) {
        const auto name = [](const Lane* x) { return x->op[0] ? "bar.sync" : "bar.arrive"; };
        for (int i = 1; i < n; ++i)
            if (l[i]->in[0] != l[0]->in[0] || l[i]->in[1] != l[0]->in[1])
                fail(format("lanes of one warp split between %s %u, %u and %s %u, %u", name(l[0]), l[0]->in[0],
                            l[0]->in[1], name(l[i]), l[i]->in[0], l[i]->in[1])
                         .c_str());
        BlockState* b = current.block;
        NamedBarrier& nb = b->named[l[0]->in[0]];
        const uint32_t threads = l[0]->in[1];
        if (nb.arrived > 0 && nb.threads != threads)
            fail(format("barrier %u reached with a count of %u while %u threads wait at it with a count of %u",
                        l[0]->in[0], threads, nb.arrived, nb.threads)
                     .c_str());
        nb.threads = threads;
        for (int i = 0; i < n; ++i) l[i]->out[0] = nb.generation;
        nb.arrived += 32;
        if (nb.arrived == threads) {
            nb.arrived = 0;
            ++nb.generation;
            for (int i = 0; i < b->n; ++i) {
                Lane& w = b->lanes[i];
                if (w.state == Lane::Waiting && w.wait_kind == WaitKind::Named && w.wait_addr == l[0]->in[0]) {
                    w.wait_kind = WaitKind::None;
                    w.state = Lane::Runnable;
                }
            }
        }
    });
    if (!wait || b->named[id].generation != me->out[0]) return;
    me->wait_kind = WaitKind::Named;
    me->wait_addr = id;
    block_lane();
}

void setmaxnreg(int n, bool inc) {
    if (n % 8 || n < 24 || n > 256)
        fail(format("setmaxnreg.%s %d: the count must be a multiple of 8 in 24..256", inc ? "inc" : "dec", n).c_str());
    current.lane->op[0] = n;
    collective(Scope::Warpgroup, inc ? "setmaxnreg.inc" : "setmaxnreg.dec", [](Lane* const* l, int count) {
        if (count != 128)
            fail(format("setmaxnreg with %d of the 128 threads of a warpgroup (every warp of the warpgroup executes "
                        "it)",
                        count)
                     .c_str());
        for (int i = 1; i < count; ++i)
            if (l[i]->op[0] != l[0]->op[0])
                fail(format("setmaxnreg: lanes of one warpgroup disagree on the count (%d, %d)", l[0]->op[0],
                            l[i]->op[0])
                         .c_str());
    });
}

// ---- scheduler hooks ---------------------------------------------------------------------------------

bool wake_tma_waiters(BlockState& b, int first_lane) {
    bool woke = false;
    for (const Mbarrier& m : b.mbarriers) {
        if (m.copies.empty()) continue;
        for (int i = first_lane; i < b.n; ++i) {
            Lane& l = b.lanes[i];
            if (l.state == Lane::Waiting && l.wait_kind == WaitKind::Mbarrier && l.wait_addr == m.addr) {
                l.state = Lane::Runnable;  // it lands the copies and checks the phase again
                woke = true;
                break;
            }
        }
    }
    return woke;
}

std::string describe_wait(const BlockState& b, const Lane& l) {
    switch (l.wait_kind) {
        case WaitKind::Mbarrier:
            for (const Mbarrier& m : b.mbarriers)
                if (m.addr == l.wait_addr)
                    return format("mbarrier 0x%x parity %u (phase %u: %u of %u arrivals pending, tx %lld)", m.addr,
                                  l.wait_parity, m.phase, m.pending, m.expected, (long long)m.tx);
            return format("mbarrier 0x%x (gone)", l.wait_addr);
        case WaitKind::Named: {
            const NamedBarrier& nb = b.named[l.wait_addr];
            return format("bar.sync %u (%u of %u threads arrived)", l.wait_addr, nb.arrived, nb.threads);
        }
        case WaitKind::Collective:
            return l.wait_tag ? format("%s (%s)", l.wait_tag, scope_name(l.wait_scope)) : "a collective";
        default: return "nothing";
    }
}

std::string mbarrier_block_end(const BlockState& b) {
    for (const Mbarrier& m : b.mbarriers) {
        if (!m.copies.empty())
            return format("ended with %zu TMA copies on the mbarrier at 0x%x never landed (no thread waited on it; the "
                          "first issued by thread %u)",
                          m.copies.size(), m.addr, m.copies[0].issuer);
        if (m.pending != m.expected || m.tx != 0)
            return format("ended with the mbarrier at 0x%x in a phase that can never complete (%u of %u arrivals "
                          "pending, tx %lld)",
                          m.addr, m.pending, m.expected, (long long)m.tx);
    }
    return {};
}

}  // namespace rl_emu

using namespace rl_emu;

// Encodes a tiled tensor map (what cuTensorMapEncodeTiled checks, then this emulator's own format in the
// 128 bytes: magic, address, element bytes / rank / swizzle, dims, strides, box, checksum). 0 on
// success, else -1 with a one-line message in err.
extern "C" int rl_emu_encode_tensor_map(uint64_t out[16], uint64_t address, uint32_t elem_bytes, uint32_t rank,
                                        const uint64_t* dims, const uint64_t* strides, const uint32_t* box_dims,
                                        uint32_t swizzle_bytes, char* err, size_t err_len) {
    auto error = [&](const std::string& msg) {
        snprintf(err, err_len, "%s", msg.c_str());
        return -1;
    };
    if (rank < 1 || rank > 5) return error(format("rank %u (1 to 5)", rank));
    if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
        return error(format("element size %u bytes (1, 2, 4 or 8)", elem_bytes));
    if (address == 0 || address % 16) return error(format("global address 0x%llx must be non-zero and 16-byte aligned",
                                                          (unsigned long long)address));
    for (uint32_t i = 0; i < rank; ++i)
        if (dims[i] == 0 || dims[i] > (1ull << 32)) return error(format("dimension %u is %llu (1 to 2^32)", i,
                                                                        (unsigned long long)dims[i]));
    for (uint32_t i = 0; i + 1 < rank; ++i)
        if (strides[i] % 16 || strides[i] >= (1ull << 40))
            return error(format("stride %u is %llu bytes (a multiple of 16 below 2^40)", i + 1,
                                (unsigned long long)strides[i]));
    for (uint32_t i = 0; i < rank; ++i)
        if (box_dims[i] == 0 || box_dims[i] > 256) return error(format("box dimension %u is %u (1 to 256)", i,
                                                                       box_dims[i]));
    if (swizzle_bytes != 0 && swizzle_bytes != 32 && swizzle_bytes != 64 && swizzle_bytes != 128)
        return error(format("swizzle of %u bytes (0, 32, 64 or 128)", swizzle_bytes));
    const uint32_t inner = box_dims[0] * elem_bytes;
    if (inner % 16) return error(format("the inner box dimension is %u bytes (a multiple of 16)", inner));
    if (swizzle_bytes && inner > swizzle_bytes)
        return error(format("the inner box dimension is %u bytes, more than the %u-byte swizzle span", inner,
                            swizzle_bytes));
    uint64_t w[16] = {};
    w[0] = MAP_MAGIC;
    w[1] = address;
    w[2] = elem_bytes | rank << 8 | (uint64_t)swizzle_bytes << 16;
    for (uint32_t i = 0; i < rank; ++i) w[3 + i] = dims[i];
    for (uint32_t i = 0; i + 1 < rank; ++i) w[8 + i] = strides[i];
    for (uint32_t i = 0; i < rank && i < 4; ++i) w[12] |= (uint64_t)box_dims[i] << (16 * i);
    if (rank == 5) w[13] = box_dims[4];
    uint64_t sum = 0;
    for (int i = 0; i < 15; ++i) sum = (sum ^ w[i]) * 0x100000001b3ull;
    w[15] = sum;
    memcpy(out, w, sizeof w);
    return 0;
}
