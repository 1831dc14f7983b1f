// A mock CUDA driver (libcuda.so) for rehearsing rooflab's GPU host path on a machine without a GPU.
//
// It implements the part of the driver API that rooflab calls through cudarc, with one emulated H100:
// device memory is host memory (a device pointer is a host address, every allocation ends at a guard
// page), streams run their work at once in issue order, graphs record what a capture enqueued and replay
// it, events read a virtual clock, and kernel launches run the kernel's source on the CPU emulator
// (../emu.cpp, the same code tests/emu.rs drives), or, with ROOFLAB_MOCK_GPU_KERNELS=skip, only check
// the launch. scripts/mock-gpu builds it and runs a command with it on the library path.
//
// What it checks, beyond what the emulator checks inside kernels (so that the first real GPU run does not
// spend its minutes on host-side mistakes):
// - PTX modules: the `.version` is one the CUDA 13.0 driver loads (<= 9.0), the `.target` runs on sm_90,
//   every `.entry` exists in the emulator with the same parameter bytes;
// - launches: the launch shape, dynamic shared memory against the function's raised limit, kernel
//   parameters as the PTX declares them;
// - copies and memsets: a device range must lie inside one live allocation;
// - stream capture (CUDA graphs): work on a capturing stream is recorded, not run; calls the driver
//   refuses while a capture is open (synchronising, synchronous copies and allocations) fail with
//   CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidate the capture, as on the GPU, on the threads the
//   capture's mode forbids them to (a thread-local capture: only the thread that began it);
// - events: timing an event created with CU_EVENT_DISABLE_TIMING or never recorded fails;
// - sticky errors: a kernel that fails (a trap, a deadlock, a protocol error the emulator names) makes
//   every later call return CUDA_ERROR_LAUNCH_FAILED, and the emulator's message goes to stderr.
// What it does not model: concurrency between streams, timing (the virtual clock is not a
// measurement), memory pools, graph memory nodes, more than one device.

#include <cuda.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

// The emulator's entry points (../emu.cpp, ../hopper.cpp), linked into this library.
extern "C" {
int rl_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3], size_t smem, const void* params,
                  size_t params_size, int schedule, uint64_t seed, char* err, size_t err_len);
size_t rl_emu_param_size(const char* name);
void* rl_emu_alloc_guarded(size_t bytes, int poison, void** base, size_t* map_len);
void rl_emu_free_guarded(void* base, size_t map_len);
int rl_emu_encode_tensor_map(uint64_t out[16], uint64_t address, uint32_t elem_bytes, uint32_t rank,
                             const uint64_t* dims, const uint64_t* strides, const uint32_t* box_dims,
                             uint32_t swizzle_bytes, char* err, size_t err_len);
}

#define MOCK_API extern "C" __attribute__((visibility("default")))

namespace {

// ---- the device ---------------------------------------------------------------------------------------

constexpr char DEVICE_NAME[] = "rooflab mock GPU (H100 emulated on the CPU)";
constexpr size_t TOTAL_MEMORY = 85520809984ull;  // what an H100 80GB HBM3 reports
constexpr size_t RESERVED_MEMORY = 530ull << 20;  // the driver's own share, never free
constexpr int SHARED_OPTIN = 232448;             // 227 KB per block once raised
constexpr int SHARED_DEFAULT = 48 << 10;
constexpr int DRIVER_VERSION = 13000;

int attribute(CUdevice_attribute a, bool* known) {
    *known = true;
    switch (a) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return 9;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return 0;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return 132;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X:
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y:
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return SHARED_DEFAULT;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return SHARED_OPTIN;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return 233472;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK:
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: return 65536;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return 2048;
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return 1980000;
        case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return 2619000;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return 5120;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: return 52428800;
        case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: return 1;
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: return 1;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: return 1;
        case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: return 1;
        case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: return 0x19;
        case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID:
        case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: return 0;
        case CU_DEVICE_ATTRIBUTE_TCC_DRIVER: return 0;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: return CU_COMPUTEMODE_DEFAULT;
        default: *known = false; return 0;
    }
}

// ---- state ----------------------------------------------------------------------------------------------

// One unit of stream work: run now, or recorded into a graph while its stream is captured.
struct Op {
    enum Kind { Kernel, Copy, Set8, Set32, HostFn, Record } kind;
    // Kernel
    CUfunction function = nullptr;
    unsigned grid[3] = {}, block[3] = {};
    size_t smem = 0;
    std::vector<unsigned char> params;
    // Copy / Set: bytes or elements
    void* dst = nullptr;
    const void* src = nullptr;
    size_t count = 0;
    unsigned value = 0;
    // HostFn
    CUhostFn fn = nullptr;
    void* user = nullptr;
    // Record
    CUevent event = nullptr;
};

}  // namespace

struct CUctx_st {
    int refs = 0;
};
struct CUstream_st {
    bool legacy = false;
    CUgraph capture = nullptr;  // the graph being captured into, if capturing
    bool invalidated = false;   // the capture hit an unsupported call and can only be ended
    CUstreamCaptureMode capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
    std::thread::id capturing_thread;  // the thread that began the capture
};
struct CUevent_st {
    unsigned flags = 0;
    bool recorded = false;
    bool pending_in_capture = false;
    double time_ms = 0;
};
struct CUgraph_st {
    std::vector<Op> ops;
};
struct CUgraphExec_st {
    std::vector<Op> ops;
};
// A kernel entry of a loaded module, as its PTX declares it.
struct CUfunc_st {
    std::string name;
    std::vector<size_t> param_sizes;
    int max_dynamic_shared = SHARED_DEFAULT;
};
struct CUmod_st {
    std::vector<std::unique_ptr<CUfunc_st>> functions;
};

namespace {

struct Allocation {
    void* map_base;
    size_t map_len;
    size_t bytes;
};

std::recursive_mutex lock;
bool initialised = false;
CUctx_st primary;
thread_local CUcontext current = nullptr;
CUstream_st legacy_stream{true};
std::set<CUstream> streams;
std::map<uintptr_t, Allocation> allocations;  // by data address
size_t allocated = 0;
CUresult sticky = CUDA_SUCCESS;
double clock_ms = 0;  // the virtual device clock events read

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("rooflab mock cuda: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

// Returns `code` after saying why (the driver only returns the code; the message is the mock's help).
#define FAIL(code, ...)          \
    do {                         \
        say(__VA_ARGS__);        \
        return code;             \
    } while (0)

bool skip_kernels() {
    static const bool skip = [] {
        const char* v = getenv("ROOFLAB_MOCK_GPU_KERNELS");
        return v && !strcmp(v, "skip");
    }();
    return skip;
}

// The start of every API call: initialised, a context current, no sticky error.
CUresult enter(bool needs_context = true) {
    if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (sticky != CUDA_SUCCESS) return sticky;
    if (needs_context && current == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
    return CUDA_SUCCESS;
}

CUstream resolve(CUstream s) {
    // 0 and CU_STREAM_LEGACY are the legacy default stream; rooflab never uses per-thread default streams.
    if (s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return &legacy_stream;
    return s;
}

bool valid_stream(CUstream s) { return s == &legacy_stream || streams.count(s); }

// Whether the capture open on `s` forbids the calling thread the driver's unsafe calls (synchronising,
// allocating, synchronous copies). As in the driver, with every thread in the default (global) interaction
// mode: a capture forbids them to the thread that began it unless it was begun relaxed, and to other threads
// only when it was begun in global mode. rooflab captures thread-locally, so tests running in parallel
// threads may synchronise while another thread captures.
bool forbids_this_thread(CUstream s) {
    if (!s->capture) return false;
    if (s->capturing_thread == std::this_thread::get_id()) return s->capture_mode != CU_STREAM_CAPTURE_MODE_RELAXED;
    return s->capture_mode == CU_STREAM_CAPTURE_MODE_GLOBAL;
}

// The capture that forbids this thread the driver's unsafe calls, if any.
CUstream capturing_stream() {
    for (CUstream s : streams)
        if (forbids_this_thread(s)) return s;
    return nullptr;
}

// A call the driver refuses while a capture forbids it to this thread: that capture is invalidated.
CUresult refuse_during_capture(const char* what) {
    CUstream s = capturing_stream();
    if (!s) return CUDA_SUCCESS;
    s->invalidated = true;
    FAIL(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "%s while a stream is being captured (the capture is now invalid)",
         what);
}

// The live allocation whose bytes include address `p`, or allocations.end().
std::map<uintptr_t, Allocation>::const_iterator allocation_holding(uintptr_t p) {
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin()) return allocations.end();
    --it;
    return p < it->first + it->second.bytes ? it : allocations.end();
}

CUresult check_device_range(const char* what, CUdeviceptr p, size_t bytes) {
    if (bytes == 0) return CUDA_SUCCESS;
    auto it = allocation_holding((uintptr_t)p);
    if (it == allocations.end())
        FAIL(CUDA_ERROR_INVALID_VALUE, "%s: 0x%llx is not in any live device allocation", what,
             (unsigned long long)p);
    if ((uintptr_t)p + bytes > it->first + it->second.bytes)
        FAIL(CUDA_ERROR_INVALID_VALUE, "%s: %zu bytes at 0x%llx run past the end of a %zu-byte allocation", what,
             bytes, (unsigned long long)p, it->second.bytes);
    return CUDA_SUCCESS;
}

void run_kernel(const Op& op) {
    if (skip_kernels()) return;
    char err[1024] = {};
    const void* params = op.params.empty() ? nullptr : op.params.data();
    if (rl_emu_launch(op.function->name.c_str(), op.grid, op.block, op.smem, params, op.params.size(), 0, 0, err,
                      sizeof err) != 0) {
        say("kernel `%s` failed: %s", op.function->name.c_str(), err);
        sticky = CUDA_ERROR_LAUNCH_FAILED;
    }
}

// Runs one op now and advances the virtual clock by a made-up cost (positive, so timings divide; never a
// measurement).
void execute(const Op& op) {
    switch (op.kind) {
        case Op::Kernel:
            run_kernel(op);
            clock_ms += 0.003;
            break;
        case Op::Copy:
            memmove(op.dst, op.src, op.count);
            clock_ms += 0.001 + op.count / 3e9;
            break;
        case Op::Set8:
            memset(op.dst, (int)op.value, op.count);
            clock_ms += 0.001 + op.count / 3e9;
            break;
        case Op::Set32:
            for (size_t i = 0; i < op.count; ++i) static_cast<unsigned*>(op.dst)[i] = op.value;
            clock_ms += 0.001 + op.count * 4 / 3e9;
            break;
        case Op::HostFn:
            op.fn(op.user);
            clock_ms += 0.005;
            break;
        case Op::Record:
            op.event->time_ms = clock_ms;
            op.event->recorded = true;
            op.event->pending_in_capture = false;
            break;
    }
}

CUresult enqueue(CUstream s, Op op) {
    s = resolve(s);
    if (!valid_stream(s)) FAIL(CUDA_ERROR_INVALID_HANDLE, "a stream that was never created or was destroyed");
    if (s->capture) {
        if (s->invalidated) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
        s->capture->ops.push_back(std::move(op));
        return CUDA_SUCCESS;
    }
    if (s->legacy && capturing_stream()) {
        // Work on the legacy stream synchronises with every stream, the capturing one included.
        return refuse_during_capture("work on the legacy default stream");
    }
    execute(op);
    return sticky;
}

CUresult allocate(CUdeviceptr* p, size_t bytes) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (allocated + bytes > TOTAL_MEMORY - RESERVED_MEMORY) return CUDA_ERROR_OUT_OF_MEMORY;
    // The data ends where a guard page begins (rounded to 16 bytes: the driver's 256-byte alignment would
    // hide overruns of up to 255 bytes), so a kernel that runs off the end faults and is named.
    Allocation a{nullptr, 0, bytes};
    // Poisoned (NaN) for the kernels to find unwritten; not when they are skipped, so that a launch-only
    // rehearsal's model-sized buffers stay untouched pages.
    void* data = rl_emu_alloc_guarded(bytes, !skip_kernels(), &a.map_base, &a.map_len);
    if (!data) return CUDA_ERROR_OUT_OF_MEMORY;
    allocations[(uintptr_t)data] = a;
    allocated += bytes;
    *p = (CUdeviceptr)data;
    return CUDA_SUCCESS;
}

CUresult release(CUdeviceptr p) {
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end())
        FAIL(CUDA_ERROR_INVALID_VALUE, "freeing 0x%llx, which is not the start of a live allocation",
             (unsigned long long)p);
    allocated -= it->second.bytes;
    rl_emu_free_guarded(it->second.map_base, it->second.map_len);
    allocations.erase(it);
    return CUDA_SUCCESS;
}

// ---- PTX ------------------------------------------------------------------------------------------------

size_t scalar_bytes(const std::string& type) {
    if (type == ".u64" || type == ".s64" || type == ".b64" || type == ".f64") return 8;
    if (type == ".u32" || type == ".s32" || type == ".b32" || type == ".f32") return 4;
    if (type == ".u16" || type == ".s16" || type == ".b16" || type == ".f16") return 2;
    if (type == ".u8" || type == ".s8" || type == ".b8") return 1;
    return 0;
}

// Parses the `.version`, `.target` and each `.entry` with its parameters' sizes. Returns an error message
// or "".
std::string parse_ptx(const std::string& ptx, std::vector<std::unique_ptr<CUfunc_st>>* out) {
    int major = 0, minor = 0;
    size_t v = ptx.find(".version ");
    if (v == std::string::npos || sscanf(ptx.c_str() + v, ".version %d.%d", &major, &minor) != 2)
        return "no .version directive (not PTX?)";
    if (major > 9 || (major == 9 && minor > 0))
        return "PTX ISA " + std::to_string(major) + "." + std::to_string(minor) +
               " is newer than the 9.0 the CUDA 13.0 driver loads (built with a newer nvcc than the pinned 13.0?)";
    size_t t = ptx.find(".target ");
    char target[32] = {};
    if (t == std::string::npos || sscanf(ptx.c_str() + t, ".target %31[a-z_0-9]", target) != 1)
        return "no .target directive";
    int sm = 0;
    char suffix = 0;
    if (sscanf(target, "sm_%d%c", &sm, &suffix) < 1) return std::string("target ") + target + " is not sm_XY";
    if (sm > 90) return std::string("target ") + target + " does not run on this sm_90 device";
    if (suffix == 'a' && sm != 90) return std::string("target ") + target + " is arch-specific to another GPU";

    for (size_t at = ptx.find(".entry "); at != std::string::npos; at = ptx.find(".entry ", at + 1)) {
        size_t name_start = at + 7;
        size_t open = ptx.find('(', name_start);
        size_t close = ptx.find(')', name_start);
        if (open == std::string::npos || close == std::string::npos) return "an .entry without a parameter list";
        auto f = std::make_unique<CUfunc_st>();
        f->name = ptx.substr(name_start, ptx.find_first_of(" \t\n(", name_start) - name_start);
        std::string params = ptx.substr(open + 1, close - open - 1);
        for (size_t p = params.find(".param"); p != std::string::npos; p = params.find(".param", p + 1)) {
            size_t end = params.find_first_of(",\n", p);
            std::string decl = params.substr(p, end == std::string::npos ? std::string::npos : end - p);
            size_t bytes = 0;
            size_t bracket = decl.find('[');
            if (bracket != std::string::npos) {
                bytes = strtoull(decl.c_str() + bracket + 1, nullptr, 10);
            } else {
                size_t dot = decl.find('.', 6);
                std::string type = decl.substr(dot, decl.find_first_of(" \t", dot) - dot);
                bytes = scalar_bytes(type);
            }
            if (bytes == 0) return "cannot size parameter `" + decl + "` of " + f->name;
            f->param_sizes.push_back(bytes);
        }
        out->push_back(std::move(f));
    }
    if (out->empty()) return "no .entry in the module";
    return "";
}

const char* error_name(CUresult e) {
    switch (e) {
#define NAME(x) \
    case x: return #x;
        NAME(CUDA_SUCCESS)
        NAME(CUDA_ERROR_INVALID_VALUE)
        NAME(CUDA_ERROR_OUT_OF_MEMORY)
        NAME(CUDA_ERROR_NOT_INITIALIZED)
        NAME(CUDA_ERROR_NO_DEVICE)
        NAME(CUDA_ERROR_INVALID_DEVICE)
        NAME(CUDA_ERROR_INVALID_PTX)
        NAME(CUDA_ERROR_UNSUPPORTED_PTX_VERSION)
        NAME(CUDA_ERROR_INVALID_CONTEXT)
        NAME(CUDA_ERROR_INVALID_HANDLE)
        NAME(CUDA_ERROR_NOT_FOUND)
        NAME(CUDA_ERROR_NOT_READY)
        NAME(CUDA_ERROR_LAUNCH_FAILED)
        NAME(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
        NAME(CUDA_ERROR_NOT_SUPPORTED)
        NAME(CUDA_ERROR_ILLEGAL_STATE)
        NAME(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
        NAME(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED)
        NAME(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD)
#undef NAME
        default: return nullptr;
    }
}

CUresult copy(const char* what, CUstream s, void* dst, const void* src, size_t bytes, CUdeviceptr dst_dev,
              CUdeviceptr src_dev) {
    if (dst_dev)
        if (CUresult r = check_device_range(what, dst_dev, bytes)) return r;
    if (src_dev)
        if (CUresult r = check_device_range(what, src_dev, bytes)) return r;
    if (bytes == 0) return CUDA_SUCCESS;
    Op op{Op::Copy};
    op.dst = dst;
    op.src = src;
    op.count = bytes;
    return enqueue(s, std::move(op));
}

}  // namespace

#define ENTER(...)                                  \
    std::lock_guard<std::recursive_mutex> held(lock); \
    if (CUresult r = enter(__VA_ARGS__)) return r

// ---- initialisation, device, context ----------------------------------------------------------------------

MOCK_API CUresult cuInit(unsigned int flags) {
    std::lock_guard<std::recursive_mutex> held(lock);
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    initialised = true;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = DRIVER_VERSION;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuGetErrorName(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    *s = error_name(e);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

MOCK_API CUresult cuGetErrorString(CUresult e, const char** s) {
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    switch (e) {
        case CUDA_ERROR_LAUNCH_FAILED: *s = "unspecified launch failure"; break;
        case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: *s = "operation not permitted when stream is capturing"; break;
        case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED:
            *s = "operation failed due to a previous error during capture";
            break;
        default: *s = error_name(e);
    }
    return *s ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

MOCK_API CUresult cuDeviceGetCount(int* count) {
    ENTER(false);
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    ENTER(false);
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
    ENTER(false);
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "%s", DEVICE_NAME);
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDeviceTotalMem(size_t* bytes, CUdevice device) {
    ENTER(false);
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = TOTAL_MEMORY;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute a, CUdevice device) {
    ENTER(false);
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    bool known;
    *value = attribute(a, &known);
    if (!known) FAIL(CUDA_ERROR_INVALID_VALUE, "device attribute %d is not modelled", (int)a);
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice device) {
    ENTER(false);
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    memcpy(uuid->bytes, "rooflab-mock-gpu", 16);
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice device) {
    ENTER(false);
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    ++primary.refs;
    *ctx = &primary;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuDevicePrimaryCtxRelease(CUdevice device) {
    std::lock_guard<std::recursive_mutex> held(lock);
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (primary.refs > 0) --primary.refs;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuCtxSetCurrent(CUcontext ctx) {
    ENTER(false);
    if (ctx != nullptr && ctx != &primary) return CUDA_ERROR_INVALID_CONTEXT;
    current = ctx;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuCtxGetCurrent(CUcontext* ctx) {
    ENTER(false);
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = current;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuCtxGetDevice(CUdevice* device) {
    ENTER();
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    *device = 0;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuCtxSynchronize() {
    ENTER();
    return refuse_during_capture("cuCtxSynchronize");
}

// ---- memory -------------------------------------------------------------------------------------------------

MOCK_API CUresult cuMemGetInfo(size_t* free_bytes, size_t* total) {
    ENTER();
    if (!free_bytes || !total) return CUDA_ERROR_INVALID_VALUE;
    *total = TOTAL_MEMORY;
    *free_bytes = TOTAL_MEMORY - RESERVED_MEMORY - allocated;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuMemAlloc(CUdeviceptr* p, size_t bytes) {
    ENTER();
    if (CUresult r = refuse_during_capture("cuMemAlloc")) return r;
    return allocate(p, bytes);
}

MOCK_API CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream s) {
    ENTER();
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    // On the GPU this becomes a graph memory node; rooflab allocates before capturing, so the mock refuses.
    if (s->capture) FAIL(CUDA_ERROR_NOT_SUPPORTED, "cuMemAllocAsync on a capturing stream is not modelled");
    return allocate(p, bytes);
}

MOCK_API CUresult cuMemFree(CUdeviceptr p) {
    ENTER();
    if (CUresult r = refuse_during_capture("cuMemFree")) return r;
    return release(p);
}

MOCK_API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) {
    ENTER();
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (s->capture) FAIL(CUDA_ERROR_NOT_SUPPORTED, "cuMemFreeAsync on a capturing stream is not modelled");
    return release(p);
}

MOCK_API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned int) {
    ENTER();
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    *p = malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

MOCK_API CUresult cuMemFreeHost(void* p) {
    ENTER();
    free(p);
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream s) {
    ENTER();
    return copy("cuMemcpyHtoDAsync", s, (void*)dst, src, bytes, dst, 0);
}

MOCK_API CUresult cuMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream s) {
    ENTER();
    return copy("cuMemcpyDtoHAsync", s, dst, (const void*)src, bytes, 0, src);
}

MOCK_API CUresult cuMemcpyDtoDAsync(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s) {
    ENTER();
    return copy("cuMemcpyDtoDAsync", s, (void*)dst, (const void*)src, bytes, dst, src);
}

MOCK_API CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t bytes) {
    ENTER();
    if (CUresult r = refuse_during_capture("cuMemcpyHtoD")) return r;
    return copy("cuMemcpyHtoD", nullptr, (void*)dst, src, bytes, dst, 0);
}

MOCK_API CUresult cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t bytes) {
    ENTER();
    if (CUresult r = refuse_during_capture("cuMemcpyDtoH")) return r;
    return copy("cuMemcpyDtoH", nullptr, dst, (const void*)src, bytes, 0, src);
}

MOCK_API CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    ENTER();
    if (CUresult r = refuse_during_capture("cuMemcpyDtoD")) return r;
    return copy("cuMemcpyDtoD", nullptr, (void*)dst, (const void*)src, bytes, dst, src);
}

MOCK_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream s) {
    ENTER();
    if (CUresult r = check_device_range("cuMemsetD8Async", dst, n)) return r;
    if (n == 0) return CUDA_SUCCESS;
    Op op{Op::Set8};
    op.dst = (void*)dst;
    op.count = n;
    op.value = value;
    return enqueue(s, std::move(op));
}

MOCK_API CUresult cuMemsetD8(CUdeviceptr dst, unsigned char value, size_t n) {
    ENTER();
    if (CUresult r = refuse_during_capture("cuMemsetD8")) return r;
    return cuMemsetD8Async(dst, value, n, nullptr);
}

MOCK_API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int value, size_t n, CUstream s) {
    ENTER();
    if (dst % 4) FAIL(CUDA_ERROR_INVALID_VALUE, "cuMemsetD32Async at an address not 4-byte aligned");
    if (CUresult r = check_device_range("cuMemsetD32Async", dst, n * 4)) return r;
    if (n == 0) return CUDA_SUCCESS;
    Op op{Op::Set32};
    op.dst = (void*)dst;
    op.count = n;
    op.value = value;
    return enqueue(s, std::move(op));
}

// ---- streams and events ------------------------------------------------------------------------------------

MOCK_API CUresult cuStreamCreate(CUstream* s, unsigned int) {
    ENTER();
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    *s = new CUstream_st{};
    streams.insert(*s);
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuStreamDestroy(CUstream s) {
    ENTER();
    if (!streams.count(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (s->capture) FAIL(CUDA_ERROR_ILLEGAL_STATE, "destroying a stream while it is being captured");
    streams.erase(s);
    delete s;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuStreamSynchronize(CUstream s) {
    ENTER();
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (s->capture || s->legacy) return refuse_during_capture("cuStreamSynchronize");
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuStreamQuery(CUstream s) {
    ENTER();
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (s->capture) return refuse_during_capture("cuStreamQuery");
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuStreamWaitEvent(CUstream s, CUevent e, unsigned int) {
    ENTER();
    s = resolve(s);
    if (!valid_stream(s) || !e) return CUDA_ERROR_INVALID_HANDLE;
    return CUDA_SUCCESS;  // work runs in issue order: everything recorded before has happened
}

MOCK_API CUresult cuEventCreate(CUevent* e, unsigned int flags) {
    ENTER();
    if (!e) return CUDA_ERROR_INVALID_VALUE;
    *e = new CUevent_st{flags};
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuEventDestroy(CUevent e) {
    ENTER();
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    delete e;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuEventRecord(CUevent e, CUstream s) {
    ENTER();
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    Op op{Op::Record};
    op.event = e;
    CUstream r = resolve(s);
    if (valid_stream(r) && r->capture) e->pending_in_capture = true;
    return enqueue(s, std::move(op));
}

MOCK_API CUresult cuEventQuery(CUevent e) {
    ENTER();
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    if (e->pending_in_capture) return refuse_during_capture("cuEventQuery of an event recorded in a capture");
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuEventSynchronize(CUevent e) {
    ENTER();
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    if (CUresult r = refuse_during_capture("cuEventSynchronize")) return r;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
    ENTER();
    if (!ms) return CUDA_ERROR_INVALID_VALUE;
    if (!start || !end) return CUDA_ERROR_INVALID_HANDLE;
    if ((start->flags | end->flags) & CU_EVENT_DISABLE_TIMING)
        FAIL(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime on an event created with CU_EVENT_DISABLE_TIMING");
    if (!start->recorded || !end->recorded)
        FAIL(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime on an event never recorded");
    *ms = (float)(end->time_ms - start->time_ms);
    return CUDA_SUCCESS;
}

// ---- modules and launches ---------------------------------------------------------------------------------

MOCK_API CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    ENTER();
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    auto m = std::make_unique<CUmod_st>();
    std::string why = parse_ptx(static_cast<const char*>(image), &m->functions);
    if (!why.empty()) FAIL(CUDA_ERROR_INVALID_PTX, "cuModuleLoadData: %s", why.c_str());
    for (auto& f : m->functions) {
        size_t total = 0;
        for (size_t b : f->param_sizes) total += b;
        size_t emulated = rl_emu_param_size(f->name.c_str());
        if (emulated == 0)
            FAIL(CUDA_ERROR_INVALID_PTX, "PTX entry `%s` is not in the emulator (stale ptx/? see scripts/check-ptx)",
                 f->name.c_str());
        if (f->param_sizes.size() != 1 || total != emulated)
            FAIL(CUDA_ERROR_INVALID_PTX,
                 "PTX entry `%s` takes %zu parameters of %zu bytes; the emulated source takes one of %zu bytes",
                 f->name.c_str(), f->param_sizes.size(), total, emulated);
    }
    *module = m.release();
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuModuleUnload(CUmodule module) {
    ENTER();
    if (!module) return CUDA_ERROR_INVALID_HANDLE;
    delete module;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuModuleGetFunction(CUfunction* f, CUmodule module, const char* name) {
    ENTER();
    if (!f || !module || !name) return CUDA_ERROR_INVALID_VALUE;
    for (auto& fn : module->functions)
        if (fn->name == name) {
            *f = fn.get();
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}

MOCK_API CUresult cuFuncSetAttribute(CUfunction fn, CUfunction_attribute a, int value) {
    ENTER();
    if (!fn) return CUDA_ERROR_INVALID_HANDLE;
    if (a != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)
        FAIL(CUDA_ERROR_INVALID_VALUE, "function attribute %d is not modelled", (int)a);
    if (value < 0 || value > SHARED_OPTIN)
        FAIL(CUDA_ERROR_INVALID_VALUE, "`%s`: %d bytes of dynamic shared memory (at most %d)", fn->name.c_str(),
             value, SHARED_OPTIN);
    fn->max_dynamic_shared = value;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuFuncGetAttribute(int* value, CUfunction_attribute a, CUfunction fn) {
    ENTER();
    if (!value || !fn) return CUDA_ERROR_INVALID_VALUE;
    switch (a) {
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = fn->max_dynamic_shared; return CUDA_SUCCESS;
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; return CUDA_SUCCESS;
        default: FAIL(CUDA_ERROR_INVALID_VALUE, "function attribute %d is not modelled", (int)a);
    }
}

MOCK_API CUresult cuLaunchKernel(CUfunction fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                 unsigned bz, unsigned smem, CUstream s, void** params, void** extra) {
    ENTER();
    if (!fn) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) FAIL(CUDA_ERROR_INVALID_VALUE, "`%s`: launch `extra` parameters are not modelled", fn->name.c_str());
    const unsigned long long threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || gx > 2147483647u || threads == 0 ||
        threads > 1024 || bz > 64)
        FAIL(CUDA_ERROR_INVALID_VALUE, "`%s`: launch grid (%u,%u,%u) block (%u,%u,%u) out of the device limits",
             fn->name.c_str(), gx, gy, gz, bx, by, bz);
    if ((int)smem > fn->max_dynamic_shared)
        FAIL(CUDA_ERROR_INVALID_VALUE,
             "`%s`: %u bytes of dynamic shared memory above its limit of %d (cuFuncSetAttribute raises it)",
             fn->name.c_str(), smem, fn->max_dynamic_shared);
    if (!params && !fn->param_sizes.empty())
        FAIL(CUDA_ERROR_INVALID_VALUE, "`%s`: no kernel parameters given", fn->name.c_str());
    Op op{Op::Kernel};
    op.function = fn;
    op.grid[0] = gx, op.grid[1] = gy, op.grid[2] = gz;
    op.block[0] = bx, op.block[1] = by, op.block[2] = bz;
    op.smem = smem;
    // The parameters are copied at launch (a graph keeps the values it captured), laid out as the PTX
    // declares them.
    for (size_t i = 0; i < fn->param_sizes.size(); ++i) {
        const unsigned char* p = static_cast<const unsigned char*>(params[i]);
        op.params.insert(op.params.end(), p, p + fn->param_sizes[i]);
    }
    return enqueue(s, std::move(op));
}

MOCK_API CUresult cuLaunchHostFunc(CUstream s, CUhostFn fn, void* user) {
    ENTER();
    if (!fn) return CUDA_ERROR_INVALID_VALUE;
    Op op{Op::HostFn};
    op.fn = fn;
    op.user = user;
    return enqueue(s, std::move(op));
}

// ---- capture and graphs ------------------------------------------------------------------------------------

MOCK_API CUresult cuStreamBeginCapture(CUstream s, CUstreamCaptureMode mode) {
    ENTER();
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (s->legacy) FAIL(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "the legacy default stream cannot be captured");
    if (s->capture) FAIL(CUDA_ERROR_ILLEGAL_STATE, "cuStreamBeginCapture on a stream already capturing");
    s->capture = new CUgraph_st{};
    s->invalidated = false;
    s->capture_mode = mode;
    s->capturing_thread = std::this_thread::get_id();
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuStreamEndCapture(CUstream s, CUgraph* graph) {
    ENTER();
    if (!graph) return CUDA_ERROR_INVALID_VALUE;
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    if (!s->capture) FAIL(CUDA_ERROR_ILLEGAL_STATE, "cuStreamEndCapture on a stream not capturing");
    if (s->capture_mode != CU_STREAM_CAPTURE_MODE_RELAXED && s->capturing_thread != std::this_thread::get_id())
        FAIL(CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD, "cuStreamEndCapture on another thread than the one that began it");
    CUgraph g = s->capture;
    s->capture = nullptr;
    if (s->invalidated) {
        s->invalidated = false;
        delete g;
        *graph = nullptr;
        return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
    }
    *graph = g;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus* status) {
    ENTER();
    if (!status) return CUDA_ERROR_INVALID_VALUE;
    s = resolve(s);
    if (!valid_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
    *status = !s->capture       ? CU_STREAM_CAPTURE_STATUS_NONE
              : s->invalidated ? CU_STREAM_CAPTURE_STATUS_INVALIDATED
                               : CU_STREAM_CAPTURE_STATUS_ACTIVE;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long) {
    ENTER();
    if (!exec || !graph) return CUDA_ERROR_INVALID_VALUE;
    *exec = new CUgraphExec_st{graph->ops};
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuGraphUpload(CUgraphExec exec, CUstream s) {
    ENTER();
    if (!exec) return CUDA_ERROR_INVALID_HANDLE;
    s = resolve(s);
    return valid_stream(s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

MOCK_API CUresult cuGraphLaunch(CUgraphExec exec, CUstream s) {
    ENTER();
    if (!exec) return CUDA_ERROR_INVALID_HANDLE;
    for (const Op& op : exec->ops) {
        if (CUresult r = enqueue(s, op)) return r;
    }
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuGraphDestroy(CUgraph graph) {
    ENTER();
    if (!graph) return CUDA_ERROR_INVALID_HANDLE;
    delete graph;
    return CUDA_SUCCESS;
}

MOCK_API CUresult cuGraphExecDestroy(CUgraphExec exec) {
    ENTER();
    if (!exec) return CUDA_ERROR_INVALID_HANDLE;
    delete exec;
    return CUDA_SUCCESS;
}

// ---- TMA --------------------------------------------------------------------------------------------------

MOCK_API CUresult cuTensorMapEncodeTiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* address,
                                         const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                         const cuuint32_t* element_strides, CUtensorMapInterleave interleave,
                                         CUtensorMapSwizzle swizzle, CUtensorMapL2promotion,
                                         CUtensorMapFloatOOBfill oob_fill) {
    // The driver's rules (cuda.h's documentation of this call) that the emulator's encoder does not check.
    ENTER();
    if (!map || !dims || !box || !element_strides || (rank > 1 && !strides)) return CUDA_ERROR_INVALID_VALUE;
    if ((uintptr_t)map % 64) FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: the map is not 64-byte aligned");
    uint32_t elem_bytes;
    switch (type) {
        case CU_TENSOR_MAP_DATA_TYPE_UINT8: elem_bytes = 1; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT16:
        case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
        case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16: elem_bytes = 2; break;
        case CU_TENSOR_MAP_DATA_TYPE_UINT32:
        case CU_TENSOR_MAP_DATA_TYPE_INT32:
        case CU_TENSOR_MAP_DATA_TYPE_FLOAT32: elem_bytes = 4; break;
        default: FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: data type %d is not modelled", (int)type);
    }
    if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE)
        FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: interleaved layouts are not modelled");
    for (cuuint32_t i = 0; i < rank; ++i)
        if (element_strides[i] != 1)
            FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: element stride %u is %u (only 1 is modelled)", i,
                 element_strides[i]);
    if (oob_fill == CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA)
        FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: NaN out-of-bounds fill is not modelled");
    uint32_t swizzle_bytes;
    switch (swizzle) {
        case CU_TENSOR_MAP_SWIZZLE_NONE: swizzle_bytes = 0; break;
        case CU_TENSOR_MAP_SWIZZLE_32B: swizzle_bytes = 32; break;
        case CU_TENSOR_MAP_SWIZZLE_64B: swizzle_bytes = 64; break;
        case CU_TENSOR_MAP_SWIZZLE_128B: swizzle_bytes = 128; break;
        default: FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: swizzle %d is not modelled", (int)swizzle);
    }
    // The whole tensor, as its strides span it, must lie in one allocation (the driver cannot check this;
    // a TMA box outside it would fault on the GPU).
    uint64_t span = dims[0] * elem_bytes;
    for (cuuint32_t i = 1; i < rank; ++i) span += (dims[i] - 1) * strides[i - 1];
    if (CUresult r = check_device_range("cuTensorMapEncodeTiled (the tensor)", (CUdeviceptr)address, span)) return r;
    char err[256] = {};
    if (rl_emu_encode_tensor_map(reinterpret_cast<uint64_t*>(map), (uint64_t)(uintptr_t)address, elem_bytes, rank, dims,
                                 strides, box, swizzle_bytes, err, sizeof err) != 0)
        FAIL(CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: %s", err);
    return CUDA_SUCCESS;
}
