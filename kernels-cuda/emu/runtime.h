// The emulator runtime's own state, shared by its three parts: emu.cpp (fibers, the block scheduler,
// barriers and warp collectives, the SIMT-era instructions, the C entry points), hopper.cpp (mbarriers,
// TMA, named barriers, setmaxnreg, the tensor-map encoder) and wgmma.cpp (the asynchronous warpgroup
// MMA). Not included by kernels: they see cuda_emu.h only.
#pragma once

#include <stdint.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "entries.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace rl_emu {

constexpr int MAX_THREADS = 1024;
// The shared-window address of the first byte of dynamic shared memory. Not 0 and not 1024-aligned (as
// if 1 KB were reserved and 128 bytes of static shared memory came first): a kernel whose layout needs a
// 1024-byte-aligned base (the 128-byte swizzle) must align it itself, as it must on the GPU.
constexpr uint32_t SHARED_BASE = 0x480;

// ---- SIMT-era state ----------------------------------------------------------------------------

// One cp.async copy, made at the wait_group that retires its group.
struct Copy {
    uint32_t dst;
    const void* src;
    int bytes, src_size;
};

enum class Scope { Warp, Warpgroup, Block };
using Exec = void (*)(Lane* const* lanes, int n);

// What a Waiting lane waits for (deadlock reports name it).
enum class WaitKind { None, Collective, Mbarrier, Named };

struct Lane {
    void* sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    char* stack = nullptr;
    unsigned linear = 0;
    uint3 idx;
    enum State { Runnable, Waiting, Done } state = Runnable;
    // What it waits for while Waiting: a collective (tag, scope), an mbarrier phase (addr, parity) or a
    // named barrier (addr = id). WaitKind::None after an mbarrier or named barrier released it.
    WaitKind wait_kind = WaitKind::None;
    const char* wait_tag = nullptr;
    Scope wait_scope = Scope::Block;
    uint32_t wait_addr = 0, wait_parity = 0;
    // Operands of the collective this lane waits at, and its results.
    uint32_t in[72];
    uint32_t out[72];
    uint64_t in64[2];
    int op[8];
    float* acc = nullptr;                // wgmma: this lane's accumulator registers
    const uint32_t* a_frag = nullptr;   // wgmma: its A fragment registers (A from registers)
    // cp.async: the open group, then committed groups oldest first.
    std::vector<Copy> open;
    std::deque<std::vector<Copy>> committed;
    bool wgmma_fenced = false;
};

struct Group {
    int arrived = 0, live = 0, first = 0, count = 0;
    const char* tag = nullptr;
    Exec exec = nullptr;
};

struct Launch {
    const KernelEntry* entry;
    dim3 grid, block;
    size_t smem;
    const void* params;
    bool reverse;
    // The starved-producer schedule: warp 0's threads run only when no other thread can, and a
    // successful mbarrier wait is a preemption point (emu.cpp, run_block).
    bool starve_warp0;
    // Not 0: every round of the scheduler visits a block's threads in a fresh random order, drawn from
    // this seed and the block's index (the same seed replays the same schedule).
    uint64_t shuffle_seed;
    std::atomic<size_t> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex error_lock;
    std::string error;
};

// ---- Hopper state (hopper.cpp, wgmma.cpp) ------------------------------------------------------

// A decoded tensor map (rl_emu_encode_tensor_map's format).
struct TensorMap {
    uint64_t address;
    uint32_t elem_bytes, rank, swizzle;  // swizzle: 0, 32, 64 or 128 bytes
    uint64_t dims[5], strides[4];       // strides in bytes, of dimensions 1 .. rank-1
    uint32_t box[5];
};

// A TMA copy issued and not landed yet: its destination holds NaN bytes until a thread waits on its
// mbarrier.
struct TmaCopy {
    TensorMap map;
    uint32_t dst;
    int32_t coord[5];
    uint32_t bytes;
    unsigned issuer;  // linear thread index, for reports
};

// An mbarrier's state, kept beside shared memory (its 8 bytes there hold a marker).
struct Mbarrier {
    uint32_t addr;
    uint32_t expected, pending;
    int64_t tx;
    uint32_t phase;  // phases completed so far; the current phase's parity is phase % 2
    std::vector<TmaCopy> copies;
};

struct NamedBarrier {
    uint32_t arrived = 0, threads = 0, generation = 0;
};

// One wgmma.mma_async in flight: operands snapshot at issue, computed when a wait_group retires it.
struct WgmmaOp {
    Elem elem;
    int n;
    bool a_in_regs, scale_d;
    int scale_a, scale_b, trans_a, trans_b;
    uint64_t a_desc, b_desc;
    float* acc[128];
    const uint32_t* a_ptr[128];
    uint32_t a[128][4];
    float c[128][64];         // the accumulator input: registers at issue, or the previous op's result
    WgmmaOp* next = nullptr;  // the op issued later on the same accumulators (takes this one's result)
    std::vector<uint32_t> chunks;  // the 16-byte shared-memory chunks its operands occupy (address >> 4)
};

// A warpgroup's wgmma ops in flight, oldest first: committed groups (their sizes in `groups`), then the
// ones not committed yet.
struct WarpgroupMma {
    std::deque<WgmmaOp> ops;
    std::deque<size_t> groups;
    size_t uncommitted = 0;
};

struct BlockState {
    Launch* launch;
    uint3 idx;
    Lane* lanes;
    int n;
    unsigned char* smem;  // shared address SHARED_BASE
    std::vector<Group> warps, warpgroups;
    Group block;
    std::vector<Lane*> members = std::vector<Lane*>(MAX_THREADS);  // scratch of complete()
    std::vector<Mbarrier> mbarriers;
    NamedBarrier named[16];
    std::vector<WarpgroupMma> wgmma;  // per warpgroup
    // Threads an mbarrier phase just released: the scheduler runs them before any other (a thread
    // spinning on try_wait reacts at once), so a stage handed back too early is overwritten while its
    // readers are still at it.
    std::vector<int> released;
    // The order the scheduler visits the threads in this round (and releases mbarrier waiters in):
    // first to last, last to first, or shuffled each round (Launch::shuffle_seed, with `rng`).
    std::vector<int> order;
    uint64_t rng = 0;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    bool failed = false;
    std::string error;
};

// ---- runtime services (emu.cpp) ------------------------------------------------------------------

std::string where();
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// The bytes at shared address `addr`, checked against the launch's dynamic shared memory.
unsigned char* shared_at(uint32_t addr, size_t bytes, const char* what);
// Waits until every live lane of the caller's group has arrived at the same instruction; the last to
// arrive runs `exec` over all of them.
void collective(Scope scope, const char* tag, Exec exec);
// Parks the running lane (state Waiting, with its wait_* fields set by the caller) until another lane
// or the scheduler makes it Runnable.
void block_lane();
// Lets the threads in BlockState::released run first (the running lane stays Runnable).
void yield_to_released();
// Hands the running lane (still Runnable) back to the scheduler, which resumes it in its turn.
void preempt();
// The threads the schedule runs only when no other can: warp 0 under Launch::starve_warp0, else none.
inline int starved_lanes(const BlockState& b) { return b.launch->starve_warp0 ? std::min(32, b.n) : 0; }
uint16_t half_at(const unsigned char* p);
inline float elem_to_f32(Elem e, uint16_t bits) {
    return e == Elem::Bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
}

// ---- hooks the scheduler calls -------------------------------------------------------------------

// hopper.cpp: makes one lane (from `first_lane` on) waiting on each mbarrier with copies not landed
// runnable (it lands them); false if there is none. Called when no lane can run, before declaring a
// deadlock (and, starving warp 0, for the other lanes before warp 0 runs).
bool wake_tma_waiters(BlockState& b, int first_lane);
// What lane `l` (Waiting) waits for, in words.
std::string describe_wait(const BlockState& b, const Lane& l);
// hopper.cpp: after every lane exited; a message if an mbarrier still has copies or a half-done phase.
std::string mbarrier_block_end(const BlockState& b);
// wgmma.cpp: a message if the exiting lane's warpgroup still has wgmma ops in flight.
std::string wgmma_lane_exit(const BlockState& b, const Lane& l);
// wgmma.cpp: fails if an asynchronous copy (`what`) into shared bytes [dst, dst + bytes) would change an
// operand of a wgmma still in flight (the tensor cores may read it any time until its wait_group).
void check_wgmma_operands_untouched(uint32_t dst, uint32_t bytes, const char* what);

}  // namespace rl_emu
