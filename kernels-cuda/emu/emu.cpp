// The CPU emulator's runtime: fibers, the block scheduler, barriers and warp/warpgroup collectives,
// the models of the SIMT-era PTX instructions in ptx.cuh (cp.async, ldmatrix, mma.sync), and the C entry
// points the Rust side calls (engine/src/emu.rs). The Hopper instructions are in hopper.cpp and
// wgmma.cpp. See cuda_emu.h for what it is and what it checks.
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <thread>

#include "runtime.h"

extern "C" const rl_emu::KernelEntry* rl_emu_entries_layers(size_t* n);
extern "C" const rl_emu::KernelEntry* rl_emu_entries_gemv(size_t* n);
extern "C" const rl_emu::KernelEntry* rl_emu_entries_decode_fused(size_t* n);
extern "C" const rl_emu::KernelEntry* rl_emu_entries_attention_decode(size_t* n);
extern "C" const rl_emu::KernelEntry* rl_emu_entries_attention_prefill(size_t* n);
extern "C" const rl_emu::KernelEntry* rl_emu_entries_layout_probe(size_t* n);
extern "C" const rl_emu::KernelEntry* rl_emu_entries_selftest(size_t* n);

namespace rl_emu {

thread_local Current current;

namespace {

constexpr size_t STACK_BYTES = 256 * 1024;  // per emulated thread; ample for kernels' register arrays
constexpr size_t PAGE = 4096;
constexpr size_t MAX_DYNAMIC_SHARED = 227 * 1024;  // Hopper's per-block limit

// ---- fibers ----------------------------------------------------------------------------------

#if defined(__x86_64__)
// Saves the callee-saved registers and the stack pointer in *from, loads them from `to`.
extern "C" void rl_emu_switch(void** from, void* to);
extern "C" void rl_emu_trampoline();
asm(R"(
    .text
    .globl rl_emu_switch
    .hidden rl_emu_switch
    .type rl_emu_switch, @function
rl_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size rl_emu_switch, .-rl_emu_switch

    .globl rl_emu_trampoline
    .hidden rl_emu_trampoline
    .type rl_emu_trampoline, @function
rl_emu_trampoline:
    movq %r12, %rdi
    call rl_emu_lane_main@PLT
    ud2
    .size rl_emu_trampoline, .-rl_emu_trampoline
)");
#endif

}  // namespace

namespace {

void switch_to_lane(BlockState* b, Lane* l) {
    current.lane = l;
    current.thread_idx = l->idx;
#if defined(__x86_64__)
    rl_emu_switch(&b->sched_sp, l->sp);
#else
    swapcontext(&b->sched_uc, &l->uc);
#endif
    current.lane = nullptr;
}

void switch_to_scheduler(BlockState* b, Lane* l) {
#if defined(__x86_64__)
    rl_emu_switch(&l->sp, b->sched_sp);
#else
    swapcontext(&l->uc, &b->sched_uc);
#endif
}

}  // namespace

std::string where() {
    char buf[160];
    const BlockState* b = current.block;
    if (!b) return "outside any kernel";
    snprintf(buf, sizeof buf, "kernel `%s` block (%u,%u,%u) thread (%u,%u,%u)", b->launch->entry->name, b->idx.x,
             b->idx.y, b->idx.z, current.thread_idx.x, current.thread_idx.y, current.thread_idx.z);
    return buf;
}

std::string format(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

namespace {

Group& group_of(BlockState* b, Scope scope, unsigned linear) {
    switch (scope) {
        case Scope::Warp: return b->warps[linear / 32];
        case Scope::Warpgroup: return b->warpgroups[linear / 128];
        default: return b->block;
    }
}

const char* scope_name(Scope s) { return s == Scope::Warp ? "warp" : s == Scope::Warpgroup ? "warpgroup" : "block"; }

// The group's waiting lanes run its instruction (by the last arrival) and go on.
void complete(BlockState* b, Group& g) {
    Lane** members = b->members.data();
    int n = 0;
    for (int i = g.first; i < g.first + g.count; ++i)
        if (b->lanes[i].state == Lane::Waiting) members[n++] = &b->lanes[i];
    if (g.exec) g.exec(members, n);
    for (int i = 0; i < n; ++i) members[i]->state = Lane::Runnable;
    g.arrived = 0;
    g.tag = nullptr;
    g.exec = nullptr;
}

}  // namespace

// Called by a lane at a barrier or a group-wide instruction: waits until every live lane of its
// group has arrived at the same one; the last to arrive runs `exec` over all of them.
void collective(Scope scope, const char* tag, Exec exec) {
    Lane* me = current.lane;
    BlockState* b = current.block;
    if (!me) fail("a barrier or warp-wide instruction outside a kernel");
    Group& g = group_of(b, scope, me->linear);
    if (g.arrived == 0) {
        g.tag = tag;
        g.exec = exec;
    } else if (g.tag != tag && strcmp(g.tag, tag) != 0) {
        fail(format("lanes of one %s diverged: some wait at %s, this one reached %s", scope_name(scope), g.tag, tag)
                 .c_str());
    }
    me->state = Lane::Waiting;
    me->wait_kind = WaitKind::Collective;
    me->wait_tag = tag;
    me->wait_scope = scope;
    if (++g.arrived == g.live) {
        complete(b, g);
        return;
    }
    switch_to_scheduler(b, me);
}

void block_lane() {
    Lane* me = current.lane;
    me->state = Lane::Waiting;
    switch_to_scheduler(current.block, me);
}

void yield_to_released() {
    if (current.block->released.empty()) return;
    switch_to_scheduler(current.block, current.lane);
}

void preempt() { switch_to_scheduler(current.block, current.lane); }

uint16_t half_at(const unsigned char* p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

// ---- services the kernels call ------------------------------------------------------------------

[[noreturn]] void fail(const char* what) {
    BlockState* b = current.block;
    const std::string msg = where() + ": " + what;
    if (!b || !current.lane) {
        fprintf(stderr, "rooflab emulator: %s\n", msg.c_str());
        abort();
    }
    if (!b->failed) {
        b->failed = true;
        b->error = msg;
    }
    switch_to_scheduler(b, current.lane);
    abort();  // the scheduler never resumes a lane of a failed block
}

void* dynamic_shared() { return current.block->smem; }

uint32_t shared_offset(const void* p) {
    const BlockState* b = current.block;
    const auto* c = static_cast<const unsigned char*>(p);
    if (c < b->smem || c > b->smem + b->launch->smem)
        fail("__cvta_generic_to_shared of a pointer outside the block's dynamic shared memory");
    return SHARED_BASE + static_cast<uint32_t>(c - b->smem);
}

unsigned char* shared_at(uint32_t addr, size_t bytes, const char* what) {
    const BlockState* b = current.block;
    if (addr < SHARED_BASE || (size_t)(addr - SHARED_BASE) + bytes > b->launch->smem)
        fail(format("%s reads/writes shared bytes 0x%x..0x%zx but the launch's dynamic shared memory is "
                    "0x%x..0x%zx",
                    what, addr, addr + bytes, SHARED_BASE, SHARED_BASE + b->launch->smem)
                 .c_str());
    return b->smem + (addr - SHARED_BASE);
}

void sync_block() { collective(Scope::Block, "__syncthreads", nullptr); }

void sync_warp(unsigned mask) {
    if (mask != 0xffffffffu) fail("__syncwarp with a partial mask is not modelled");
    collective(Scope::Warp, "__syncwarp", nullptr);
}

static void require_full_warp(int n, const char* what) {
    if (n != 32) fail(format("%s with %d of 32 lanes (the others exited)", what, n).c_str());
}

uint32_t shfl(unsigned mask, uint32_t value, int src_or_xor, bool xor_mode, int width) {
    if (mask != 0xffffffffu) fail("shuffles with a partial mask are not modelled");
    if (width <= 0 || width > 32 || (width & (width - 1))) fail("shuffle width must be a power of two <= 32");
    Lane* me = current.lane;
    me->in[0] = value;
    me->in[1] = (uint32_t)src_or_xor;
    me->op[0] = width;
    me->op[1] = xor_mode;
    collective(Scope::Warp, xor_mode ? "shfl.bfly" : "shfl.idx", [](Lane* const* l, int n) {
        require_full_warp(n, "a shuffle");
        const bool bfly = l[0]->op[1];
        for (int i = 0; i < 32; ++i) {
            const int w = l[i]->op[0], base = i & ~(w - 1);
            int src = bfly ? (i ^ (int)l[i]->in[1]) : base + ((int)l[i]->in[1] & (w - 1));
            if (src >= base + w) src = i;  // outside the lane's segment: its own value
            l[i]->out[0] = l[src]->in[0];
        }
    });
    return me->out[0];
}

// ---- cp.async: the destination may change any time from the issue to the wait, so it is filled
// with NaN bytes at the issue and gets its data at the wait: a read before the wait, and a copy issued
// while other threads still read the old contents (a missing barrier), both see NaN. ---------------

void cp_async(uint32_t dst, const void* src, int bytes, int src_size) {
    unsigned char* d = shared_at(dst, bytes, "cp.async");
    if (dst % bytes) fail("cp.async destination not aligned to its size");
    check_wgmma_operands_untouched(dst, bytes, "cp.async");
    memset(d, 0xff, bytes);
    current.lane->open.push_back({dst, src, bytes, src_size});
}

void cp_async_commit_group() {
    Lane* me = current.lane;
    me->committed.push_back(std::move(me->open));
    me->open.clear();
}

void cp_async_wait_group(int n) {
    Lane* me = current.lane;
    while ((int)me->committed.size() > n) {
        for (const Copy& c : me->committed.front()) {
            unsigned char* d = current.block->smem + (c.dst - SHARED_BASE);
            if (c.src_size > 0) memcpy(d, c.src, c.src_size);
            memset(d + c.src_size, 0, c.bytes - c.src_size);
        }
        me->committed.pop_front();
    }
}

// ---- ldmatrix / mma.sync ----------------------------------------------------------------------

void ldmatrix_x4(uint32_t r[4], uint32_t addr, bool trans) {
    Lane* me = current.lane;
    me->in[0] = addr;
    me->op[0] = trans;
    collective(Scope::Warp, trans ? "ldmatrix.x4.trans" : "ldmatrix.x4", [](Lane* const* l, int n) {
        require_full_warp(n, "ldmatrix");
        const bool tr = l[0]->op[0];
        uint16_t m[4][8][8];  // matrix, row (the lane that gave its address), column
        for (int j = 0; j < 4; ++j)
            for (int row = 0; row < 8; ++row) {
                const uint32_t a = l[8 * j + row]->in[0];
                if (a % 16) fail("ldmatrix row address not 16-byte aligned");
                const unsigned char* p = shared_at(a, 16, "ldmatrix");
                for (int c = 0; c < 8; ++c) m[j][row][c] = half_at(p + 2 * c);
            }
        for (int i = 0; i < 32; ++i) {
            const int g = i / 4, t = i % 4;
            for (int j = 0; j < 4; ++j) {
                const uint16_t lo = tr ? m[j][2 * t][g] : m[j][g][2 * t];
                const uint16_t hi = tr ? m[j][2 * t + 1][g] : m[j][g][2 * t + 1];
                l[i]->out[j] = lo | (uint32_t)hi << 16;
            }
        }
    });
    memcpy(r, me->out, 16);
}

// mma.sync.m16n8k16.row.col: lane (g = lane/4, t = lane%4) holds A rows g, g+8 at columns 2t, 2t+1 (a0: g,
// a1: g+8, a2: g with +8 columns, a3: g+8 with +8), B columns (k) 2t, 2t+1 (b0) and +8 (b1) of n = g, and
// C/D rows g (d0, d1) and g+8 (d2, d3) at columns 2t, 2t+1. The low half of each register comes first.
void mma_m16n8k16(Elem elem, float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    Lane* me = current.lane;
    memcpy(me->in, a, 16);
    me->in[4] = b0;
    me->in[5] = b1;
    memcpy(me->in + 6, d, 16);
    me->op[0] = (int)elem;
    collective(Scope::Warp, "mma.m16n8k16", [](Lane* const* l, int n) {
        require_full_warp(n, "mma.sync");
        const Elem e = (Elem)l[0]->op[0];
        float A[16][16], B[16][8], C[16][8];
        for (int i = 0; i < 32; ++i) {
            if (l[i]->op[0] != (int)e) fail("mma.sync lanes disagree on the element type");
            const int g = i / 4, t = i % 4;
            const uint32_t* in = l[i]->in;
            for (int h = 0; h < 2; ++h) {
                A[g][2 * t + h] = elem_to_f32(e, (uint16_t)(in[0] >> 16 * h));
                A[g + 8][2 * t + h] = elem_to_f32(e, (uint16_t)(in[1] >> 16 * h));
                A[g][2 * t + 8 + h] = elem_to_f32(e, (uint16_t)(in[2] >> 16 * h));
                A[g + 8][2 * t + 8 + h] = elem_to_f32(e, (uint16_t)(in[3] >> 16 * h));
                B[2 * t + h][g] = elem_to_f32(e, (uint16_t)(in[4] >> 16 * h));
                B[2 * t + 8 + h][g] = elem_to_f32(e, (uint16_t)(in[5] >> 16 * h));
                C[g][2 * t + h] = bits_to_f32(in[6 + h]);
                C[g + 8][2 * t + h] = bits_to_f32(in[8 + h]);
            }
        }
        // k outermost, columns innermost: every element still sums k = 0..15 in order (the same floats),
        // and the column loop is contiguous, so the compiler vectorises it (this is the emulator's hot loop).
        for (int row = 0; row < 16; ++row)
            for (int k = 0; k < 16; ++k)
                for (int col = 0; col < 8; ++col) C[row][col] += A[row][k] * B[k][col];
        for (int i = 0; i < 32; ++i) {
            const int g = i / 4, t = i % 4;
            for (int r = 0; r < 4; ++r) l[i]->out[r] = f32_to_bits(C[g + 8 * (r / 2)][2 * t + r % 2]);
        }
    });
    memcpy(d, me->out, 16);
}

float ex2_approx_ftz(float x) {
    if (fpclassify(x) == FP_SUBNORMAL) x = 0.0f;
    const float y = exp2f(x);
    return fpclassify(y) == FP_SUBNORMAL ? 0.0f : y;
}

// ---- the scheduler ----------------------------------------------------------------------------

namespace {

// A lane's exit: it no longer counts at barriers (a block barrier its group already waits at may now
// complete); warp-wide instructions need every lane, so one waiting for an exited lane is an error.
void lane_exit(BlockState* b, Lane* me) {
    size_t pending = me->open.size();
    for (const auto& g : me->committed) pending += g.size();
    if (pending) fail(format("exited with %zu cp.async copies never waited for", pending).c_str());
    const std::string wgmma = wgmma_lane_exit(*b, *me);
    if (!wgmma.empty()) fail(wgmma.c_str());
    me->state = Lane::Done;
    const Scope scopes[3] = {Scope::Warp, Scope::Warpgroup, Scope::Block};
    for (Scope s : scopes) {
        Group& g = group_of(b, s, me->linear);
        --g.live;
        if (g.arrived > 0 && g.arrived == g.live) {
            if (s != Scope::Block) fail(format("exited while its %s waits at %s", scope_name(s), g.tag).c_str());
            complete(b, g);
        }
    }
}

}  // namespace

extern "C" void rl_emu_lane_main(Lane* me) {
    BlockState* b = current.block;
    b->launch->entry->call(b->launch->params);
    lane_exit(b, me);
    switch_to_scheduler(b, me);
    abort();
}

namespace {

// Each waiting thread and what it waits for, runs of consecutive threads waiting for the same thing
// merged ("threads 128-255: mbarrier 0x... parity 0 (...)"), cut to fit a one-line error.
std::string deadlock_report(const BlockState& b) {
    std::string out, run;
    int first = -1, last = -1;
    const auto flush = [&] {
        if (first < 0) return;
        out += first == last ? format(" thread %d: ", first) : format(" threads %d-%d: ", first, last);
        out += run + ";";
    };
    for (int i = 0; i < b.n; ++i) {
        if (b.lanes[i].state != Lane::Waiting) continue;
        const std::string d = describe_wait(b, b.lanes[i]);
        if (first >= 0 && d == run && last == i - 1) {
            last = i;
            continue;
        }
        flush();
        first = last = i;
        run = d;
    }
    flush();
    if (out.size() > 400) out = out.substr(0, 397) + "...";
    return out;
}

#if !defined(__x86_64__)
void lane_entry_ucontext(unsigned lo, unsigned hi) {
    rl_emu_lane_main(reinterpret_cast<Lane*>((uintptr_t)hi << 32 | lo));
}
#endif

struct Worker {
    std::vector<Lane> lanes;
    char* stacks = nullptr;
    size_t stacks_bytes = 0;
    unsigned char* smem = nullptr;
    size_t smem_bytes = 0;

    explicit Worker(int n, size_t smem_size) : lanes(n) {
        const size_t per = STACK_BYTES + PAGE;
        stacks_bytes = per * n;
        stacks = static_cast<char*>(mmap(nullptr, stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        if (stacks == MAP_FAILED) {
            stacks = nullptr;
            return;
        }
        for (int i = 0; i < n; ++i) {
            mprotect(stacks + i * per, PAGE, PROT_NONE);  // guard page below each stack
            lanes[i].stack = stacks + i * per + PAGE;
        }
        smem_bytes = smem_size;
        smem = static_cast<unsigned char*>(aligned_alloc(128, (smem_size + 127) / 128 * 128 + 128));
    }
    ~Worker() {
        if (stacks) munmap(stacks, stacks_bytes);
        free(smem);
    }

    void init_lane(Lane& l, const dim3& block, int i) {
        l.linear = i;
        l.idx = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        l.state = Lane::Runnable;
        l.open.clear();
        l.committed.clear();
        l.wgmma_fenced = false;
        l.wait_kind = WaitKind::None;
#if defined(__x86_64__)
        // Initial frame for rl_emu_switch: six saved registers (r12 = the lane) then the trampoline as the
        // return address; the trampoline's call then sees the ABI's 16-byte stack alignment.
        uintptr_t top = (uintptr_t)(l.stack + STACK_BYTES) & ~(uintptr_t)15;
        auto* sp = reinterpret_cast<uint64_t*>(top - 72);
        memset(sp, 0, 72);
        sp[3] = (uint64_t)(uintptr_t)&l;                   // r12
        sp[6] = (uint64_t)(uintptr_t)&rl_emu_trampoline;  // return address
        l.sp = sp;
#else
        getcontext(&l.uc);
        l.uc.uc_stack.ss_sp = l.stack;
        l.uc.uc_stack.ss_size = STACK_BYTES;
        l.uc.uc_link = nullptr;
        const uintptr_t p = (uintptr_t)&l;
        makecontext(&l.uc, (void (*)())lane_entry_ucontext, 2, (unsigned)p, (unsigned)(p >> 32));
#endif
    }

    // A uniformly random permutation of `order` (Fisher-Yates), from the xorshift64* state `rng`.
    static void shuffle(std::vector<int>& order, uint64_t& rng) {
        for (size_t k = order.size(); k > 1; --k) {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            const uint64_t r = rng * 0x2545f4914f6cdd1dull;
            std::swap(order[k - 1], order[(r >> 32) % k]);
        }
    }

    // Runs one block to the end; false (with the error recorded in the launch) if it failed.
    bool run_block(Launch& L, size_t linear_block) {
        const dim3& g = L.grid;
        const int n = L.block.x * L.block.y * L.block.z;
        BlockState b;
        b.launch = &L;
        b.idx = uint3{(unsigned)(linear_block % g.x), (unsigned)(linear_block / g.x % g.y),
                 (unsigned)(linear_block / ((size_t)g.x * g.y))};
        b.lanes = lanes.data();
        b.n = n;
        b.smem = smem;
        memset(smem, 0xff, smem_bytes);  // NaN in every 16- and 32-bit view: reads before writes show
        for (int w = 0; w * 32 < n; ++w) b.warps.push_back({0, std::min(32, n - 32 * w), 32 * w, std::min(32, n - 32 * w)});
        for (int w = 0; w * 128 < n; ++w)
            b.warpgroups.push_back({0, std::min(128, n - 128 * w), 128 * w, std::min(128, n - 128 * w)});
        b.block = {0, n, 0, n};
        b.wgmma.resize(b.warpgroups.size());
        b.order.resize(n);
        for (int k = 0; k < n; ++k) b.order[k] = L.reverse ? n - 1 - k : k;
        b.rng = L.shuffle_seed ^ (0x9e3779b97f4a7c15ull * (linear_block + 1));
        for (int i = 0; i < n; ++i) init_lane(lanes[i], L.block, i);

        current = Current{};
        current.block = &b;
        current.block_idx = b.idx;
        current.block_dim = {L.block.x, L.block.y, L.block.z};
        current.grid_dim = {L.grid.x, L.grid.y, L.grid.z};
        // Runs lane l until it blocks or yields, then the threads an mbarrier phase released meanwhile, in the
        // order released (they go first).
        const auto run_lane = [&](Lane& l) {
            switch_to_lane(&b, &l);
            for (size_t r = 0; r < b.released.size() && !b.failed; ++r)
                if (lanes[b.released[r]].state == Lane::Runnable) switch_to_lane(&b, &lanes[b.released[r]]);
            b.released.clear();
        };
        // Lanes below `starved` (warp 0 when the schedule starves it) run only when no other lane can, one at
        // a time, and only after the TMA copies the others wait for have landed: a producer warp then lags
        // its consumers as far as the protocol allows.
        const int starved = starved_lanes(b);
        for (;;) {
            bool ran = false, all_done = true;
            if (L.shuffle_seed) shuffle(b.order, b.rng);
            for (int k = 0; k < n && !b.failed; ++k) {
                const int i = b.order[k];
                Lane& l = lanes[i];
                if (l.state == Lane::Runnable && i >= starved) {
                    ran = true;
                    run_lane(l);
                }
                if (l.state != Lane::Done) all_done = false;
            }
            if (b.failed) break;
            if (!ran && starved > 0 && !all_done) {
                if (wake_tma_waiters(b, starved)) continue;
                for (int i = 0; i < starved && !ran; ++i)
                    if (lanes[i].state == Lane::Runnable) {
                        ran = true;
                        run_lane(lanes[i]);
                    }
                if (b.failed) break;
            }
            if (all_done) {
                const std::string end = mbarrier_block_end(b);
                if (!end.empty()) {
                    b.failed = true;
                    b.error = format("kernel `%s` block (%u,%u,%u): ", L.entry->name, b.idx.x, b.idx.y, b.idx.z) + end;
                }
                break;
            }
            // Nothing ran: the TMA copies that waiting threads poll for land now (as late as they can),
            // else the block is deadlocked.
            if (!ran && !wake_tma_waiters(b, 0)) {
                b.failed = true;
                b.error = format("kernel `%s` block (%u,%u,%u): deadlock, every live thread waits:", L.entry->name,
                                 b.idx.x, b.idx.y, b.idx.z) +
                          deadlock_report(b);
            }
        }
        current = Current{};
        if (b.failed) {
            std::lock_guard<std::mutex> lock(L.error_lock);
            if (!L.failed.exchange(true)) L.error = b.error;
            return false;
        }
        return true;
    }
};

const KernelEntry* find_entry(const char* name) {
    using Table = const KernelEntry* (*)(size_t*);
    const Table tables[] = {rl_emu_entries_layers,           rl_emu_entries_gemv,
                            rl_emu_entries_decode_fused,     rl_emu_entries_attention_decode,
                            rl_emu_entries_attention_prefill, rl_emu_entries_layout_probe,
                            rl_emu_entries_selftest};
    for (Table t : tables) {
        size_t n = 0;
        const KernelEntry* e = t(&n);
        for (size_t i = 0; i < n; ++i)
            if (!strcmp(e[i].name, name)) return &e[i];
    }
    return nullptr;
}

// A fault inside an emulated kernel (an out-of-range global address, a guard page) names the kernel,
// block and thread before the process dies.
void on_fault(int sig, siginfo_t* info, void*) {
    char buf[400];
    const std::string w = where();
    const int len = snprintf(buf, sizeof buf, "rooflab emulator: %s: %s at address %p\n", w.c_str(),
                             sig == SIGSEGV ? "SIGSEGV" : "SIGBUS", info->si_addr);
    if (write(2, buf, len > 0 ? (size_t)len : 0) < 0) {
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void install_fault_handler() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa = {};
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
    });
}

// Each worker thread gets an alternate signal stack so the handler runs even after a fiber stack overflow.
struct AltStack {
    std::vector<char> mem = std::vector<char>(64 * 1024);
    AltStack() {
        stack_t ss = {};
        ss.ss_sp = mem.data();
        ss.ss_size = mem.size();
        sigaltstack(&ss, nullptr);
    }
    ~AltStack() {
        stack_t ss = {};
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, nullptr);
    }
};

}  // namespace
}  // namespace rl_emu

using namespace rl_emu;

// Runs kernel `name` over the grid; 0 on success, else -1 with a one-line message in err. `schedule`: 0 runs
// each block's threads first to last, 1 (or ROOFLAB_EMU_REVERSE=1) last to first, 2 (or
// ROOFLAB_EMU_STARVE_WARP0=1) with warp 0 starved (Launch::starve_warp0), 3 (or ROOFLAB_EMU_SHUFFLE=SEED) in a
// fresh random order every round, drawn from `seed` (Launch::shuffle_seed); the variables combine.
extern "C" int rl_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3], size_t smem,
                             const void* params, size_t params_size, int schedule, uint64_t seed, char* err,
                             size_t err_len) {
    auto error = [&](const std::string& msg) {
        snprintf(err, err_len, "%s", msg.c_str());
        return -1;
    };
    const KernelEntry* entry = find_entry(name);
    if (!entry) return error(format("no kernel `%s` in the emulator", name));
    if (params_size != entry->param_size)
        return error(format("kernel `%s` takes %zu parameter bytes, given %zu", name, entry->param_size, params_size));
    if (schedule < 0 || schedule > 3) return error(format("kernel `%s`: schedule %d (0 to 3)", name, schedule));
    if (schedule == 3 && seed == 0) return error(format("kernel `%s`: a shuffled schedule needs a seed other than 0", name));
    const size_t threads = (size_t)block[0] * block[1] * block[2];
    if (threads == 0 || threads > MAX_THREADS)
        return error(format("kernel `%s`: %zu threads per block (1 to 1024)", name, threads));
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535)
        return error(format("kernel `%s`: grid (%u,%u,%u) out of range", name, grid[0], grid[1], grid[2]));
    if (smem > MAX_DYNAMIC_SHARED)
        return error(format("kernel `%s`: %zu bytes of dynamic shared memory (at most %zu)", name, smem, MAX_DYNAMIC_SHARED));
    install_fault_handler();

    Launch L;
    L.entry = entry;
    L.grid = {grid[0], grid[1], grid[2]};
    L.block = {block[0], block[1], block[2]};
    L.smem = smem;
    L.params = params;
    const char* rev = getenv("ROOFLAB_EMU_REVERSE");
    const char* starve = getenv("ROOFLAB_EMU_STARVE_WARP0");
    L.starve_warp0 = schedule == 2 || (starve && !strcmp(starve, "1"));
    L.reverse = schedule == 1 || (rev && !strcmp(rev, "1"));
    const char* shuffle = getenv("ROOFLAB_EMU_SHUFFLE");
    L.shuffle_seed = schedule == 3 ? seed : shuffle ? strtoull(shuffle, nullptr, 10) : 0;
    const size_t blocks = (size_t)grid[0] * grid[1] * grid[2];
    unsigned workers = std::max(1u, std::thread::hardware_concurrency());
    if (const char* t = getenv("ROOFLAB_EMU_THREADS")) workers = std::max(1, atoi(t));
    workers = (unsigned)std::min<size_t>(workers, blocks);

    auto work = [&] {
        AltStack alt;
        Worker w((int)threads, smem);
        if (!w.stacks || !w.smem) {
            std::lock_guard<std::mutex> lock(L.error_lock);
            if (!L.failed.exchange(true)) L.error = "out of host memory for the emulated threads' stacks";
            return;
        }
        for (;;) {
            if (L.failed) return;
            const size_t b = L.next_block++;
            if (b >= blocks || !w.run_block(L, b)) return;
        }
    };
    std::vector<std::thread> pool;
    for (unsigned i = 1; i < workers; ++i) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (L.failed) return error(L.error);
    return 0;
}

// Parameter size of kernel `name`, or 0 if the emulator does not have it.
extern "C" size_t rl_emu_param_size(const char* name) {
    const KernelEntry* e = find_entry(name);
    return e ? e->param_size : 0;
}

// Host memory for kernel operands: `bytes` (rounded up to 16) ending exactly at an inaccessible page, with
// one before it too, so a kernel that runs off either end faults at once (and on_fault names it). With
// `poison`, every byte starts as 0xff (NaN in every float view, the slack past `bytes` included); without,
// as the zeros of fresh pages, none of them touched.
// Returns the data pointer; *base and *map_len are what rl_emu_free_guarded needs.
extern "C" void* rl_emu_alloc_guarded(size_t bytes, int poison, void** base, size_t* map_len) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t rounded = std::max<size_t>(16, (bytes + 15) / 16 * 16);
    const size_t data_pages = (rounded + page - 1) / page;
    const size_t total = (data_pages + 2) * page;
    // MAP_NORESERVE: the mock driver's launch-only rehearsals allocate model-sized buffers they never touch.
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* c = static_cast<char*>(m);
    mprotect(c, page, PROT_NONE);
    mprotect(c + (data_pages + 1) * page, page, PROT_NONE);
    *base = m;
    *map_len = total;
    char* data = c + (data_pages + 1) * page - rounded;
    if (poison) memset(data, 0xff, rounded);
    return data;
}

extern "C" void rl_emu_free_guarded(void* base, size_t map_len) { munmap(base, map_len); }
