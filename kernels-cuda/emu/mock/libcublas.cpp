// A mock cuBLAS (libcublas.so) beside the mock driver (libcuda.cpp): the calls rooflab makes through
// cudarc (create, set stream, destroy, GemmEx and its strided-batched form, Sgemm), computed on the CPU in
// stream order. Each product is enqueued on the handle's stream as a host function (cuLaunchHostFunc of
// the mock driver), so a product issued while the stream is captured lands in the graph and runs at
// replay, as a cuBLAS kernel would. With ROOFLAB_MOCK_GPU_KERNELS=skip nothing is computed.
//
// Checked as cuBLAS checks them: dimensions, leading dimensions against the operand shapes, and the type
// combinations rooflab uses (bf16 or f16 inputs with f32 or the same 16-bit output, f32 compute; f32).

#include <cuda.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <thread>
#include <vector>

#define MOCK_API extern "C" __attribute__((visibility("default")))

namespace {

// The values of cublas_api.h / library_types.h that this file needs (no cuBLAS headers here).
enum Status { SUCCESS = 0, NOT_INITIALIZED = 1, INVALID_VALUE = 7, EXECUTION_FAILED = 13, NOT_SUPPORTED = 15 };
enum Operation { OP_N = 0, OP_T = 1, OP_C = 2 };
enum DataType { R_32F = 0, R_16F = 2, R_16BF = 14 };
enum ComputeType { COMPUTE_32F = 68, COMPUTE_32F_FAST_16F = 74, COMPUTE_32F_FAST_16BF = 75, COMPUTE_32F_FAST_TF32 = 77 };

struct Handle {
    CUstream stream = nullptr;
};

void say(const char* what) { fprintf(stderr, "rooflab mock cublas: %s\n", what); }

bool skip_kernels() {
    const char* v = getenv("ROOFLAB_MOCK_GPU_KERNELS");
    return v && !strcmp(v, "skip");
}

float half_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h >> 15) << 31;
    int exp = (h >> 10) & 31;
    uint32_t mant = h & 1023;
    uint32_t bits;
    if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            exp = 1;
            while (!(mant & 1024)) mant <<= 1, --exp;
            bits = sign | (uint32_t)(exp + 112) << 23 | (mant & 1023) << 13;
        }
    } else {
        bits = sign | (uint32_t)(exp + 112) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t float_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffff) > 0x7f800000) return (uint16_t)((bits >> 16) | 64);  // quiet NaN
    bits += 0x7fff + ((bits >> 16) & 1);                                         // round to nearest even
    return (uint16_t)(bits >> 16);
}

uint16_t float_to_half(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    const uint32_t abs = bits & 0x7fffffff;
    if (abs > 0x7f800000) return sign | 0x7e00;
    if (abs >= 0x477ff000) return sign | 0x7c00;  // rounds to infinity
    if (abs < 0x33000001) return sign;            // rounds to zero
    int exp = (int)(abs >> 23) - 112;
    uint32_t mant = (abs & 0x7fffff) | 0x800000;
    int shift = exp <= 0 ? 14 - exp : 13;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    if (exp > 0) h = ((uint32_t)exp << 10) + (h - 1024);
    return sign | (uint16_t)h;
}

float load(const void* base, DataType t, size_t i) {
    switch (t) {
        case R_32F: return static_cast<const float*>(base)[i];
        case R_16BF: {
            uint32_t bits = (uint32_t) static_cast<const uint16_t*>(base)[i] << 16;
            float f;
            memcpy(&f, &bits, 4);
            return f;
        }
        default: return half_to_float(static_cast<const uint16_t*>(base)[i]);
    }
}

void store(void* base, DataType t, size_t i, float v) {
    switch (t) {
        case R_32F: static_cast<float*>(base)[i] = v; break;
        case R_16BF: static_cast<uint16_t*>(base)[i] = float_to_bf16(v); break;
        default: static_cast<uint16_t*>(base)[i] = float_to_half(v); break;
    }
}

// One (batched, strided) column-major product C = alpha op(A) op(B) + beta C, as cuBLAS defines it.
struct Gemm {
    Operation ta, tb;
    int m, n, k;
    float alpha, beta;
    const void* a;
    DataType at;
    long long lda, stride_a;
    const void* b;
    DataType bt;
    long long ldb, stride_b;
    void* c;
    DataType ct;
    long long ldc, stride_c;
    int batch;

    void run_columns(int batch_index, int j0, int j1) const {
        const size_t ao = (size_t)batch_index * stride_a, bo = (size_t)batch_index * stride_b,
                     co = (size_t)batch_index * stride_c;
        for (int j = j0; j < j1; ++j)
            for (int i = 0; i < m; ++i) {
                double acc = 0;
                for (int p = 0; p < k; ++p) {
                    const size_t ai = ta == OP_N ? i + (size_t)p * lda : p + (size_t)i * lda;
                    const size_t bi = tb == OP_N ? p + (size_t)j * ldb : j + (size_t)p * ldb;
                    acc += (double)load(a, at, ao + ai) * load(b, bt, bo + bi);
                }
                const size_t ci = co + i + (size_t)j * ldc;
                // beta == 0 must not read C (it may hold NaN), as in cuBLAS.
                const double old = beta == 0 ? 0 : (double)beta * load(c, ct, ci);
                store(c, ct, ci, (float)(alpha * acc + old));
            }
    }

    void run() const {
        if (skip_kernels()) return;
        const int workers = (int)std::max(1u, std::min(std::thread::hardware_concurrency(), 16u));
        for (int bi = 0; bi < batch; ++bi) {
            std::vector<std::thread> pool;
            const int per = (n + workers - 1) / workers;
            for (int w = 0; w < workers; ++w) {
                const int j0 = w * per, j1 = std::min(n, j0 + per);
                if (j0 < j1) pool.emplace_back([=] { run_columns(bi, j0, j1); });
            }
            for (auto& t : pool) t.join();
        }
    }
};

void run_gemm(void* g) { static_cast<const Gemm*>(g)->run(); }

int enqueue(Handle* h, const Gemm& g) {
    if (g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0) return INVALID_VALUE;
    if (g.lda < std::max(1, g.ta == OP_N ? g.m : g.k) || g.ldb < std::max(1, g.tb == OP_N ? g.k : g.n) ||
        g.ldc < std::max(1, g.m)) {
        say("a leading dimension is smaller than its operand's rows (CUBLAS_STATUS_INVALID_VALUE)");
        return INVALID_VALUE;
    }
    if (g.m == 0 || g.n == 0 || g.batch == 0) return SUCCESS;
    Gemm* copy = new Gemm(g);
    if (cuLaunchHostFunc(h->stream, run_gemm, copy) != CUDA_SUCCESS) {
        delete copy;
        return EXECUTION_FAILED;
    }
    // A captured product keeps its arguments for every replay; one that already ran does not need them.
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (cuStreamIsCapturing(h->stream, &status) == CUDA_SUCCESS && status == CU_STREAM_CAPTURE_STATUS_NONE) delete copy;
    return SUCCESS;
}

bool supported(DataType at, DataType bt, DataType ct, int compute) {
    const bool f32_compute = compute == COMPUTE_32F || compute == COMPUTE_32F_FAST_16F ||
                             compute == COMPUTE_32F_FAST_16BF || compute == COMPUTE_32F_FAST_TF32;
    if (!f32_compute || at != bt) return false;
    if (at == R_32F) return ct == R_32F;
    return (at == R_16BF || at == R_16F) && (ct == R_32F || ct == at);
}

}  // namespace

MOCK_API int cublasCreate_v2(void** handle) {
    if (!handle) return INVALID_VALUE;
    *handle = new Handle{};
    return SUCCESS;
}

MOCK_API int cublasDestroy_v2(void* handle) {
    if (!handle) return NOT_INITIALIZED;
    delete static_cast<Handle*>(handle);
    return SUCCESS;
}

MOCK_API int cublasSetStream_v2(void* handle, CUstream stream) {
    if (!handle) return NOT_INITIALIZED;
    static_cast<Handle*>(handle)->stream = stream;
    return SUCCESS;
}

MOCK_API int cublasGemmStridedBatchedEx(void* handle, int ta, int tb, int m, int n, int k, const void* alpha,
                                        const void* a, int at, int lda, long long stride_a, const void* b, int bt,
                                        int ldb, long long stride_b, const void* beta, void* c, int ct, int ldc,
                                        long long stride_c, int batch, int compute, int /*algo*/) {
    if (!handle) return NOT_INITIALIZED;
    if (ta == OP_C || tb == OP_C) return NOT_SUPPORTED;
    if (!supported((DataType)at, (DataType)bt, (DataType)ct, compute)) {
        say("a type combination rooflab does not use (CUBLAS_STATUS_NOT_SUPPORTED)");
        return NOT_SUPPORTED;
    }
    Gemm g{(Operation)ta, (Operation)tb, m, n, k, *static_cast<const float*>(alpha), *static_cast<const float*>(beta),
           a, (DataType)at, lda, stride_a, b, (DataType)bt, ldb, stride_b, c, (DataType)ct, ldc, stride_c, batch};
    return enqueue(static_cast<Handle*>(handle), g);
}

MOCK_API int cublasGemmEx(void* handle, int ta, int tb, int m, int n, int k, const void* alpha, const void* a, int at,
                          int lda, const void* b, int bt, int ldb, const void* beta, void* c, int ct, int ldc,
                          int compute, int algo) {
    return cublasGemmStridedBatchedEx(handle, ta, tb, m, n, k, alpha, a, at, lda, 0, b, bt, ldb, 0, beta, c, ct, ldc,
                                      0, 1, compute, algo);
}

MOCK_API int cublasSgemm_v2(void* handle, int ta, int tb, int m, int n, int k, const float* alpha, const float* a,
                            int lda, const float* b, int ldb, const float* beta, float* c, int ldc) {
    return cublasGemmStridedBatchedEx(handle, ta, tb, m, n, k, alpha, a, R_32F, lda, 0, b, R_32F, ldb, 0, beta, c,
                                      R_32F, ldc, 0, 1, COMPUTE_32F, -1);
}
