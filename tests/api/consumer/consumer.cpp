// Consumer of the installed C++ wrapper: RAII objects, a library error arriving as moe_rt::error, and the full
// runtime (moe_rt::engine) generating from a text prompt.
#include <cstdio>
#include <moe_runtime.hpp>
#include <vector>

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
    moe_engine_options eo = moe_rt::default_engine_options();
    eo.expert_budget_bytes = 2 * 24576;
    eo.n_ctx = 32;
    moe_rt::engine eng(argv[1], eo);
    const std::vector<int32_t> out = eng.generate(eng.tokenize("Hello world"), 4, moe_rt::greedy());
    std::printf("generated");
    for (size_t i = 0; i < out.size(); ++i) std::printf("%c%d", i ? ',' : ' ', out[i]);
    std::printf("\n");
    o.expert_budget_bytes = 1;
    try {
        moe_rt::context tiny(m, o);
    } catch (const moe_rt::error& e) {
        std::printf("status %s caught: %s\n", moe_status_string(e.status()), e.what());
        return 0;
    }
    return 1;
}
