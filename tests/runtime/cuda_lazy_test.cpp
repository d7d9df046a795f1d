// CUDA costs nothing until it is used: a process linked with the runtime has no CUDA library mapped at start (the
// CUDA runtime is linked statically and opens the driver on the first CUDA call; cuBLAS is opened when the first
// CUDA backend is made). Opening cuBLAS finds every function the CUDA backend calls, checked without a GPU so that
// a machine with only the toolkit catches a missing or mismatched library.
#include <gtest/gtest.h>
#include <link.h>

#include <cstring>
#include <string>
#include <string_view>

#include "common/error.h"
#include "runtime/backend_cuda.h"

namespace {

// Whether a shared object whose file name starts with `prefix` is mapped into this process.
bool loaded(std::string_view prefix) {
    struct search {
        std::string_view prefix;
        bool found = false;
    } s{prefix};
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* data) -> int {
            auto* st = static_cast<search*>(data);
            const char* path = info->dlpi_name ? info->dlpi_name : "";
            const char* slash = std::strrchr(path, '/');
            if (std::string_view(slash ? slash + 1 : path).starts_with(st->prefix)) st->found = true;
            return st->found ? 1 : 0;
        },
        &s);
    return s.found;
}

}  // namespace

// Runs first (declaration order) so that nothing in this process has asked for CUDA yet.
TEST(cuda_lazy, no_cuda_library_is_mapped_at_start) {
    EXPECT_FALSE(loaded("libcuda."));  // the driver
    EXPECT_FALSE(loaded("libcudart"));
    EXPECT_FALSE(loaded("libcublas"));
}

TEST(cuda_lazy, cublas_opens_on_demand_with_every_function) {
#ifdef MOE_HAVE_CUDA
    EXPECT_FALSE(loaded("libcublas"));
    try {
        moe::load_cuda_blas();
    } catch (const moe::error& e) {
        FAIL() << e.what();
    }
    EXPECT_TRUE(loaded("libcublas."));
    EXPECT_TRUE(loaded("libcublasLt"));  // pulled in by libcublas itself
    moe::load_cuda_blas();               // a second call reuses the open library
#else
    EXPECT_THROW(moe::load_cuda_blas(), moe::error);
#endif
}
