// Consumer of the installed C++ wrapper: RAII objects, and a library error arriving as moe_rt::error.
#include <moe_runtime.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    moe_rt::model m(argv[1]);
    moe_options o = moe_rt::default_options();
    moe_rt::context ctx(m, o);
    const int32_t ids[2] = {1, 0};
    ctx.route(0, ids);
    auto [p, n] = ctx.acquire(0, 1).data();
    std::printf("expert (0,1): %llu bytes at %p, %llu misses\n", (unsigned long long)n, p,
                (unsigned long long)ctx.stats().misses);
    o.expert_budget_bytes = 1;
    try {
        moe_rt::context tiny(m, o);
    } catch (const moe_rt::error& e) {
        std::printf("status %s caught: %s\n", moe_status_string(e.status()), e.what());
        return 0;
    }
    return 1;
}
