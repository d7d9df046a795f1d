// The CUDA backend (see backend_cuda.h). In a build without CUDA only the factory exists, and it refuses.
#include "runtime/backend_cuda.h"

#include "common/error.h"
#include "common/gpu.h"

#ifdef MOE_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "runtime/cuda/attention.cuh"
#include "runtime/cuda/dequant.cuh"
#include "runtime/cuda/elementwise.cuh"
#include "runtime/cuda/norm.cuh"
#include "runtime/cuda/rope.cuh"
#include "runtime/cuda/route.cuh"
#endif

namespace moe {

#ifdef MOE_HAVE_CUDA

namespace {

// cuBLAS is opened with dlopen when the first CUDA backend is made, not linked: libcublas and the libcublasLt it
// pulls in map several hundred MB, which every process would pay at start-up (and a CPU-only machine without them
// could not start at all). The functions are looked up under the names cublas_v2.h maps them to (cublasCreate is
// cublasCreate_v2), typed by the header's own declarations.
#define MOE_CUBLAS_STR2(x) #x
#define MOE_CUBLAS_STR(x) MOE_CUBLAS_STR2(x)

struct cublas_api {
    decltype(&cublasCreate) create = nullptr;
    decltype(&cublasDestroy) destroy = nullptr;
    decltype(&cublasSetStream) set_stream = nullptr;
    decltype(&cublasSetMathMode) set_math_mode = nullptr;
    decltype(&cublasSetAtomicsMode) set_atomics_mode = nullptr;
    decltype(&cublasSetWorkspace) set_workspace = nullptr;
    decltype(&cublasSgemv) sgemv = nullptr;
    decltype(&cublasSgemm) sgemm = nullptr;
    decltype(&cublasGetStatusString) status_string = nullptr;
};

cublas_api load_cublas() {
    // The soname of the major version the headers are from; then the same file in the toolkit this was built
    // with, for a toolkit outside the loader's search path.
    const std::string soname = "libcublas.so." MOE_CUBLAS_STR(CUBLAS_VER_MAJOR);
    void* lib = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    std::string why = lib ? "" : ::dlerror();
#ifdef MOE_CUDA_LIBRARY_DIR
    if (!lib) lib = ::dlopen((std::string(MOE_CUDA_LIBRARY_DIR) + "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
    if (!lib)
        fail(
            "CUDA backend: cannot load cuBLAS ({}); install cuBLAS {} (part of the CUDA toolkit) or add the "
            "directory holding {} to LD_LIBRARY_PATH",
            why, CUBLAS_VER_MAJOR, soname);
    cublas_api api;
    auto bind = [&](auto& fn, const char* name) {
        void* p = ::dlsym(lib, name);
        if (!p)
            fail("CUDA backend: {} has no function {}: it is not the cuBLAS {} this build was compiled against", soname,
                 name, CUBLAS_VER_MAJOR);
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    bind(api.create, MOE_CUBLAS_STR(cublasCreate));
    bind(api.destroy, MOE_CUBLAS_STR(cublasDestroy));
    bind(api.set_stream, MOE_CUBLAS_STR(cublasSetStream));
    bind(api.set_math_mode, MOE_CUBLAS_STR(cublasSetMathMode));
    bind(api.set_atomics_mode, MOE_CUBLAS_STR(cublasSetAtomicsMode));
    bind(api.set_workspace, MOE_CUBLAS_STR(cublasSetWorkspace));
    bind(api.sgemv, MOE_CUBLAS_STR(cublasSgemv));
    bind(api.sgemm, MOE_CUBLAS_STR(cublasSgemm));
    bind(api.status_string, MOE_CUBLAS_STR(cublasGetStatusString));
    return api;  // the library stays open for the life of the process
}

// Loaded once; a failed load throws and is tried again by the next caller.
const cublas_api& cublas() {
    static const cublas_api api = load_cublas();
    return api;
}

#define MOE_CUBLAS_CHECK(call)                                                               \
    do {                                                                                     \
        cublasStatus_t _moe_st = (call);                                                     \
        if (_moe_st != CUBLAS_STATUS_SUCCESS)                                                \
            ::moe::check_failed(#call, __FILE__, __LINE__, cublas().status_string(_moe_st)); \
    } while (0)

class backend_cuda final : public backend {
public:
    explicit backend_cuda(const backend_cuda_config& cfg) : _cfg(cfg) {
        int n = gpu_count();
        if (n == 0) fail("CUDA backend: no GPU found ({})", gpu_description());
        if (cfg.device < 0 || cfg.device >= n)
            fail("CUDA backend: device {} does not exist; found {} device(s)", cfg.device, n);
        const cublas_api& blas = cublas();  // before anything is allocated: a missing cuBLAS leaks nothing
        MOE_CUDA_CHECK(cudaSetDevice(cfg.device));
        MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&_stream, cudaStreamNonBlocking));
        MOE_CUBLAS_CHECK(blas.create(&_cublas));
        MOE_CUBLAS_CHECK(blas.set_stream(_cublas, _stream));
        // FP32 products stay FP32 (no TF32) and cuBLAS never uses atomics (its results are then reproducible).
        MOE_CUBLAS_CHECK(blas.set_math_mode(_cublas, CUBLAS_DEFAULT_MATH));
        MOE_CUBLAS_CHECK(blas.set_atomics_mode(_cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
        _cublas_ws = alloc(cfg.cublas_workspace_bytes);
        MOE_CUBLAS_CHECK(blas.set_workspace(_cublas, _cublas_ws, cfg.cublas_workspace_bytes));
        _ws_floats = std::max<uint64_t>(cfg.matmul_workspace_bytes / sizeof(float), 1);
        _ws = static_cast<float*>(alloc(_ws_floats * sizeof(float)));
    }
    ~backend_cuda() override {
        cudaStreamSynchronize(_stream);
        cublas().destroy(_cublas);
        cudaFree(_ws);
        cudaFree(_cublas_ws);
        cudaStreamDestroy(_stream);
    }

    std::string_view name() const override { return "cuda"; }
    bool host_memory() const override { return false; }

    void* alloc(uint64_t bytes) override {
        void* p = nullptr;
        const cudaError_t e = cudaMalloc(&p, std::max<uint64_t>(bytes, 1));
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail("CUDA backend: cannot allocate {} bytes of device memory: {}", bytes, cudaGetErrorString(e));
        }
        MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, std::max<uint64_t>(bytes, 1), _stream));
        return p;
    }
    void free(void* p) override {
        if (!p) return;
        MOE_CUDA_CHECK(cudaStreamSynchronize(_stream));  // nothing issued may still use it
        MOE_CUDA_CHECK(cudaFree(p));
    }
    void upload(void* dst, const void* src, uint64_t bytes) override {
        if (!bytes) return;
        MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, _stream));
        MOE_CUDA_CHECK(cudaStreamSynchronize(_stream));  // src may be reused once we return
    }
    void download(void* dst, const void* src, uint64_t bytes) override {
        if (!bytes) return;
        MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, _stream));
        MOE_CUDA_CHECK(cudaStreamSynchronize(_stream));
    }
    void copy(void* dst, const void* src, uint64_t bytes) override {
        if (!bytes) return;
        MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, _stream));
    }
    void synchronize() override { MOE_CUDA_CHECK(cudaStreamSynchronize(_stream)); }

    bool supports(tensor_type t) const override { return cuda_backend_supports(t); }
    void get_row(tensor_type t, const void* W, int64_t row, int64_t n_cols, float* out) override {
        const tensor_type_info& ti = type_info(t);
        const uint64_t row_bytes = uint64_t(n_cols / ti.block_elems) * ti.block_bytes;
        const uint8_t* src = static_cast<const uint8_t*>(W) + uint64_t(row) * row_bytes;
        if (t == tensor_type::F32) {
            copy(out, src, row_bytes);
            return;
        }
        MOE_CHECK(dequantize_cuda_supported(t));
        dequantize_cuda(t, src, out, n_cols, _stream);
    }

    void matvec(tensor_type t, const void* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) override {
        if (n_rows == 0) return;
        if (t == tensor_type::F32) {
            MOE_CHECK(n_cols > 0 && n_cols <= INT32_MAX && n_rows <= INT32_MAX);
            // Row-major W (n_rows, n_cols) is column-major W^T with leading dimension n_cols: y = (W^T)^T x.
            const float one = 1.0f, zero = 0.0f;
            MOE_CUBLAS_CHECK(cublas().sgemv(_cublas, CUBLAS_OP_T, int(n_cols), int(n_rows), &one,
                                            static_cast<const float*>(W), int(n_cols), x, 1, &zero, y, 1));
            return;
        }
        MOE_CHECK(dequantize_cuda_supported(t));
        dequant_matvec_cuda(t, W, x, y, n_cols, n_rows, _stream);
    }

    void matmul(tensor_type t, const void* W, const float* X, float* Y, int64_t n_cols, int64_t n_rows,
                int64_t n_tok) override {
        if (n_tok < _cfg.matmul_min_tokens) {
            for (int64_t i = 0; i < n_tok; ++i) matvec(t, W, X + i * n_cols, Y + i * n_rows, n_cols, n_rows);
            return;
        }
        MOE_CHECK(n_cols > 0 && n_cols <= INT32_MAX && n_rows <= INT32_MAX && n_tok <= INT32_MAX);
        if (t == tensor_type::F32) {
            gemm(static_cast<const float*>(W), X, Y, n_cols, n_rows, n_rows, n_tok);
            return;
        }
        MOE_CHECK(dequantize_cuda_supported(t));
        if (uint64_t(n_cols) > _ws_floats)
            fail("CUDA backend: a row of {} columns does not fit the matmul workspace of {} bytes", n_cols,
                 _ws_floats * sizeof(float));
        const tensor_type_info& ti = type_info(t);
        const uint64_t row_bytes = uint64_t(n_cols / ti.block_elems) * ti.block_bytes;
        const int64_t chunk = int64_t(std::min<uint64_t>(_ws_floats / uint64_t(n_cols), uint64_t(n_rows)));
        for (int64_t r0 = 0; r0 < n_rows; r0 += chunk) {
            const int64_t rows = std::min(chunk, n_rows - r0);
            dequantize_cuda(t, static_cast<const uint8_t*>(W) + uint64_t(r0) * row_bytes, _ws, rows * n_cols, _stream);
            gemm(_ws, X, Y + r0, n_cols, rows, n_rows, n_tok);
        }
    }

    void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) override {
        rmsnorm_cuda(x, w, y, n, 1, eps, _stream);
    }
    void rmsnorm_rows(const float* x, const float* w, float* y, int64_t n, int64_t n_rows, float eps) override {
        rmsnorm_cuda(x, w, y, n, n_rows, eps, _stream);
    }
    void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float freq_base, rope_style style) override {
        rope_cuda(x, n_heads, head_dim, n_rot, pos, freq_base, style == rope_style::NEOX, _stream);
    }
    void attention(const float* q, const float* k_cache, const float* v_cache, float* out, float* scores, int n_head,
                   int n_head_kv, int hd_k, int hd_v, int n_kv, float scale) override {
        attention_cuda(q, k_cache, v_cache, out, scores, n_head, n_head_kv, hd_k, hd_v, n_kv, scale, _stream);
    }
    void route(const float* logits, float* probs, int n_experts, int k, gating_func gating, bool norm_topk,
               float weights_scale, int* ids, float* weights) override {
        const route_gating g = gating == gating_func::SOFTMAX   ? route_gating::SOFTMAX
                               : gating == gating_func::SIGMOID ? route_gating::SIGMOID
                                                                : route_gating::SOFTMAX_WEIGHT;
        route_cuda(logits, probs, n_experts, k, g, norm_topk, weights_scale, ids, weights, _stream);
    }
    void swiglu(const float* gate, const float* up, float* out, int64_t n) override {
        swiglu_cuda(gate, up, out, n, _stream);
    }
    void weighted_sum(const float* const* ys, const float* w, int k, float* out, int64_t n) override {
        static_assert(max_weighted_k <= weighted_sum_max_k);
        weighted_sum_cuda(ys, w, k, out, n, _stream);
    }
    void add(float* y, const float* x, int64_t n) override { add_cuda(y, x, n, _stream); }
    void add_gated(float* y, const float* x, const float* gate_logit, int64_t n) override {
        add_gated_cuda(y, x, gate_logit, n, _stream);
    }

private:
    // Y[:, 0:rows] (ldy = n_rows_total) = X (n_tok, n_cols) W^T for row-major W (rows, n_cols), in column-major
    // terms Y^T = (W^T)^T X^T.
    void gemm(const float* W, const float* X, float* Y, int64_t n_cols, int64_t rows, int64_t ldy, int64_t n_tok) {
        const float one = 1.0f, zero = 0.0f;
        MOE_CUBLAS_CHECK(cublas().sgemm(_cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(n_tok), int(n_cols), &one, W,
                                        int(n_cols), X, int(n_cols), &zero, Y, int(ldy)));
    }

    backend_cuda_config _cfg;
    cudaStream_t _stream = nullptr;
    cublasHandle_t _cublas = nullptr;
    void* _cublas_ws = nullptr;  // (cublas_workspace_bytes)
    float* _ws = nullptr;        // (matmul_workspace_bytes / 4) dequantized row chunk
    uint64_t _ws_floats = 0;
};

}  // namespace

bool cuda_backend_available() {
    return gpu_count() > 0;
}

bool cuda_backend_supports(tensor_type t) {
    return t == tensor_type::F32 || dequantize_cuda_supported(t);
}

std::unique_ptr<backend> make_backend_cuda(const backend_cuda_config& cfg) {
    return std::make_unique<backend_cuda>(cfg);
}

void load_cuda_blas() {
    (void)cublas();
}

#else

bool cuda_backend_available() {
    return false;
}

bool cuda_backend_supports(tensor_type) {
    return false;
}

std::unique_ptr<backend> make_backend_cuda(const backend_cuda_config&) {
    fail("CUDA backend: this build has no CUDA (configure with -DMOE_CUDA=ON on a machine with the CUDA toolkit)");
}

void load_cuda_blas() {
    fail("cuBLAS: this build has no CUDA (configure with -DMOE_CUDA=ON on a machine with the CUDA toolkit)");
}

#endif

}  // namespace moe
