/* tiny_engine: a small engine of its own, in C, that embeds moe-runtime only through the public C header.
 *
 * It runs the MoE FFN stack of an F32 model (every MoE layer: its own router -> top-k -> SwiGLU experts ->
 * weighted sum in rank order -> residual) for a few token vectors, three times:
 *   1. reference: expert weights read straight from the model file with fread (no offloading at all);
 *   2. through the C API with an unlimited budget (every expert fits);
 *   3. through the C API with a budget smaller than the model (experts evicted and re-streamed, prefetched by
 *      the prefetcher's co-activation history, fed by moe_route),
 * and exits 0 only when the three outputs are bit-identical (invariant 2 of docs/invariants.md) and the small
 * budget was respected. The router is the engine's own (a fixed pseudo-random matrix): the point is the expert path.
 *
 * usage: tiny_engine MODEL.gguf [--budget BYTES] [--tokens N] [--trace OUT.trace]
 */
#include <math.h>
#include <moe_runtime.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                                              \
    do {                                                                                                         \
        moe_status s_ = (call);                                                                                  \
        if (s_ != MOE_OK) {                                                                                      \
            fprintf(stderr, "tiny_engine: %s failed: %s: %s\n", #call, moe_status_string(s_), moe_last_error()); \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

typedef struct {
    int n_layers, n_experts, top_k, n_embd, n_ff;
    uint64_t off_gate, off_up, off_down; /* offsets of the three matrices inside an expert's packed bytes */
    float* router;                       /* (n_layers, n_experts, n_embd) the engine's own router */
    float *logits, *h, *y, *acc;         /* scratch: (n_experts), (n_ff), (n_embd), (n_embd) */
    float* ref_expert;                   /* reference mode: one expert read from the file */
    uint64_t expert_bytes;
    const char* path;
    moe_model* model;
} engine;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float rng_uniform(void) { /* xorshift64*: the same numbers on every platform */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ull) >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

static void* xmalloc(size_t n) {
    void* p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "tiny_engine: out of memory\n");
        exit(1);
    }
    return p;
}

/* y = silu(W_gate x) * (W_up x), then down. Matrices in ggml order: row r of W_gate is n_embd contiguous floats. */
static void expert_ffn(const engine* e, const uint8_t* bytes, const float* x, float* y) {
    const float* wg = (const float*)(bytes + e->off_gate);
    const float* wu = (const float*)(bytes + e->off_up);
    const float* wd = (const float*)(bytes + e->off_down);
    for (int f = 0; f < e->n_ff; ++f) {
        float g = 0.0f, u = 0.0f;
        for (int d = 0; d < e->n_embd; ++d) {
            g += wg[(size_t)f * e->n_embd + d] * x[d];
            u += wu[(size_t)f * e->n_embd + d] * x[d];
        }
        e->h[f] = g / (1.0f + expf(-g)) * u;
    }
    for (int d = 0; d < e->n_embd; ++d) {
        float s = 0.0f;
        for (int f = 0; f < e->n_ff; ++f) s += wd[(size_t)d * e->n_ff + f] * e->h[f];
        y[d] = s;
    }
}

/* Softmax over the engine's router logits, top-k (ties to the lower id), weights renormalised over the k. */
static void route(engine* e, int layer, const float* x, int32_t* ids, float* w) {
    const float* R = e->router + (size_t)layer * e->n_experts * e->n_embd;
    float mx = -INFINITY, sum = 0.0f;
    for (int j = 0; j < e->n_experts; ++j) {
        float s = 0.0f;
        for (int d = 0; d < e->n_embd; ++d) s += R[(size_t)j * e->n_embd + d] * x[d];
        e->logits[j] = s;
        if (s > mx) mx = s;
    }
    for (int j = 0; j < e->n_experts; ++j) e->logits[j] = expf(e->logits[j] - mx);
    for (int r = 0; r < e->top_k; ++r) {
        int best = -1;
        for (int j = 0; j < e->n_experts; ++j) {
            int taken = 0;
            for (int q = 0; q < r; ++q) taken |= ids[q] == j;
            if (!taken && (best < 0 || e->logits[j] > e->logits[best])) best = j;
        }
        ids[r] = best;
        w[r] = e->logits[best];
        sum += w[r];
    }
    for (int r = 0; r < e->top_k; ++r) w[r] /= sum;
}

static void read_expert_from_file(engine* e, int layer, int expert) {
    moe_expert_part parts[16];
    size_t n = 0;
    for (int i = 0; i < 16; ++i) parts[i].struct_size = sizeof(moe_expert_part);
    CHECK(moe_model_get_expert_parts(e->model, layer, expert, parts, 16, &n));
    FILE* f = fopen(e->path, "rb");
    if (!f) {
        perror(e->path);
        exit(1);
    }
    for (size_t i = 0; i < n && i < 16; ++i) {
        if (fseek(f, (long)parts[i].file_offset, SEEK_SET) != 0 ||
            fread((uint8_t*)e->ref_expert + parts[i].slot_offset, 1, parts[i].bytes, f) != parts[i].bytes) {
            fprintf(stderr, "tiny_engine: %s: short read at offset %llu\n", e->path,
                    (unsigned long long)parts[i].file_offset);
            exit(1);
        }
    }
    fclose(f);
}

/* Runs the MoE stack on `n_tokens` vectors in place. ctx == NULL: reference mode (fread). */
static void run(engine* e, moe_context* ctx, float* xs, int n_tokens) {
    int32_t ids[64];
    float w[64];
    moe_handle* hs[64];
    for (int t = 0; t < n_tokens; ++t) {
        float* x = xs + (size_t)t * e->n_embd;
        if (ctx) CHECK(moe_set_position(ctx, 0, (uint32_t)t));
        for (int l = 0; l < e->n_layers; ++l) {
            route(e, l, x, ids, w);
            memset(e->acc, 0, sizeof(float) * (size_t)e->n_embd);
            if (ctx) {
                CHECK(moe_route(ctx, l, (size_t)e->top_k, ids, w));
                /* Pin every selected expert first so their loads overlap, then compute in rank order. */
                for (int r = 0; r < e->top_k; ++r) CHECK(moe_acquire(ctx, l, ids[r], &hs[r]));
            }
            for (int r = 0; r < e->top_k; ++r) {
                const void* bytes = NULL;
                if (ctx) {
                    uint64_t n = 0;
                    CHECK(moe_wait(hs[r]));
                    CHECK(moe_handle_data(hs[r], &bytes, &n));
                    if (n != e->expert_bytes) {
                        fprintf(stderr, "tiny_engine: expert holds %llu bytes, expected %llu\n", (unsigned long long)n,
                                (unsigned long long)e->expert_bytes);
                        exit(1);
                    }
                } else {
                    read_expert_from_file(e, l, ids[r]);
                    bytes = e->ref_expert;
                }
                expert_ffn(e, (const uint8_t*)bytes, x, e->y);
                for (int d = 0; d < e->n_embd; ++d) e->acc[d] += w[r] * e->y[d]; /* fixed (rank) order */
                if (ctx) CHECK(moe_release(hs[r]));
            }
            for (int d = 0; d < e->n_embd; ++d) x[d] += e->acc[d];
        }
    }
}

static moe_context* make_context(engine* e, uint64_t budget) {
    moe_options o;
    moe_context* ctx = NULL;
    CHECK(moe_options_init(&o));
    o.expert_budget_bytes = budget;
    o.policy = "lru";
    CHECK(moe_context_create(e->model, &o, &ctx));
    return ctx;
}

#define USAGE                                                                               \
    "usage: tiny_engine MODEL [--budget BYTES] [--tokens N] [--trace OUT]\n"                \
    "  --budget BYTES  expert budget of the small run (default: half the experts' bytes)\n" \
    "  --tokens N      token vectors to run, 1..65536 (default 16)\n"                       \
    "  --trace OUT     write the small run's routing trace (moe-trace v1)\n"

/* The whole of `s` as a decimal number in [min, max]: digits only (no sign, space or suffix), no wrap-around.
 * Returns 0 and sets *out, or -1. */
static int parse_u64(const char* s, uint64_t min, uint64_t max, uint64_t* out) {
    uint64_t v = 0;
    if (s == NULL || *s == '\0') return -1;
    for (const char* p = s; *p; ++p) {
        if (*p < '0' || *p > '9') return -1;
        const uint64_t d = (uint64_t)(*p - '0');
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (v < min) return -1;
    *out = v;
    return 0;
}

/* A bad command line: the reason and the usage on stderr, status 2. */
static int bad_usage(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tiny_engine: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n" USAGE);
    va_end(ap);
    return 2;
}

int main(int argc, char** argv) {
    const char* trace_out = NULL;
    const char* model = NULL;
    uint64_t budget = 0, tokens = 16;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (model) return bad_usage("unexpected argument '%s' (the model is '%s')", a, model);
            model = a;
            continue;
        }
        if (strcmp(a, "--budget") && strcmp(a, "--tokens") && strcmp(a, "--trace"))
            return bad_usage("unknown argument %s", a);
        if (i + 1 >= argc) return bad_usage("%s needs a value", a);
        const char* v = argv[++i];
        if (!strcmp(a, "--budget") && parse_u64(v, 1, UINT64_MAX, &budget))
            return bad_usage("--budget '%s': expected a positive number of bytes (digits only)", v);
        if (!strcmp(a, "--tokens") && parse_u64(v, 1, 65536, &tokens))
            return bad_usage("--tokens '%s': expected a count in 1..65536", v);
        if (!strcmp(a, "--trace")) trace_out = v;
    }
    if (!model) return bad_usage("no MODEL given");
    const int n_tokens = (int)tokens;

    engine e;
    memset(&e, 0, sizeof(e));
    e.path = model;
    CHECK(moe_model_open(e.path, &e.model));
    moe_model_info info;
    info.struct_size = sizeof(info);
    CHECK(moe_model_get_info(e.model, &info));
    e.n_layers = info.n_layers;
    e.n_experts = info.n_experts;
    e.top_k = info.top_k;
    e.n_embd = info.n_embd;
    e.n_ff = info.n_ff_exp;
    if (info.n_files != 1 || e.top_k > 64) {
        fprintf(stderr, "tiny_engine: needs a single-file model with top_k <= 64\n");
        return 1;
    }

    /* Where gate, up and down sit in an expert's packed bytes (the same for every expert of this model). */
    moe_expert_part parts[16];
    size_t n_parts = 0;
    for (int i = 0; i < 16; ++i) parts[i].struct_size = sizeof(moe_expert_part);
    CHECK(moe_model_get_expert_parts(e.model, 0, 0, parts, 16, &n_parts));
    int have = 0;
    for (size_t i = 0; i < n_parts && i < 16; ++i) {
        if (strcmp(parts[i].type, "F32") != 0) {
            fprintf(stderr, "tiny_engine: expert part %zu is %s; this engine computes F32 experts only\n", i,
                    parts[i].type);
            return 1;
        }
        if (parts[i].kind == MOE_PART_GATE) e.off_gate = parts[i].slot_offset, have |= 1;
        if (parts[i].kind == MOE_PART_UP) e.off_up = parts[i].slot_offset, have |= 2;
        if (parts[i].kind == MOE_PART_DOWN) e.off_down = parts[i].slot_offset, have |= 4;
    }
    if (have != 7) {
        fprintf(stderr, "tiny_engine: experts without separate gate/up/down matrices are not supported\n");
        return 1;
    }
    CHECK(moe_model_get_expert_bytes(e.model, 0, 0, &e.expert_bytes));

    const size_t D = (size_t)e.n_embd;
    e.router = xmalloc(sizeof(float) * (size_t)e.n_layers * (size_t)e.n_experts * D);
    for (size_t i = 0; i < (size_t)e.n_layers * (size_t)e.n_experts * D; ++i) e.router[i] = rng_uniform();
    e.logits = xmalloc(sizeof(float) * (size_t)e.n_experts);
    e.h = xmalloc(sizeof(float) * (size_t)e.n_ff);
    e.y = xmalloc(sizeof(float) * D);
    e.acc = xmalloc(sizeof(float) * D);
    e.ref_expert = xmalloc(e.expert_bytes);
    float* x0 = xmalloc(sizeof(float) * D * (size_t)n_tokens);
    for (size_t i = 0; i < D * (size_t)n_tokens; ++i) x0[i] = rng_uniform();
    float* out[3];
    for (int i = 0; i < 3; ++i) {
        out[i] = xmalloc(sizeof(float) * D * (size_t)n_tokens);
        memcpy(out[i], x0, sizeof(float) * D * (size_t)n_tokens);
    }

    /* Default small budget: half the experts' bytes, but at least 2 x top_k slots (room for the prefetches). */
    const uint64_t slot = (info.max_expert_bytes + 4095) / 4096 * 4096;
    if (budget == 0) {
        budget = info.total_expert_bytes / 2;
        if (budget < 2 * (uint64_t)e.top_k * slot) budget = 2 * (uint64_t)e.top_k * slot;
    }

    run(&e, NULL, out[0], n_tokens);
    moe_context* full = make_context(&e, 0);
    run(&e, full, out[1], n_tokens);
    moe_context* small = make_context(&e, budget);
    run(&e, small, out[2], n_tokens);

    moe_stats st;
    st.struct_size = sizeof(st);
    CHECK(moe_get_stats(small, &st));
    moe_context_info ci;
    ci.struct_size = sizeof(ci);
    CHECK(moe_context_get_info(small, &ci));
    if (trace_out) CHECK(moe_trace_write(small, trace_out));

    const size_t bytes = sizeof(float) * D * (size_t)n_tokens;
    const int same_full = memcmp(out[0], out[1], bytes) == 0;
    const int same_small = memcmp(out[0], out[2], bytes) == 0;
    printf("tiny_engine: %s (%s), %d tokens x %d MoE layers, top-%d of %d experts\n", info.name, info.arch, n_tokens,
           e.n_layers, e.top_k, e.n_experts);
    printf("small budget: %llu bytes = %u slots for %llu expert bytes; high water %llu bytes\n",
           (unsigned long long)ci.budget_bytes, ci.n_slots, (unsigned long long)info.total_expert_bytes,
           (unsigned long long)ci.high_water_bytes);
    printf(
        "small budget: hits %llu (prefetch hits %llu), misses %llu, loads %llu (prefetch %llu), %llu bytes "
        "loaded, reader %s\n",
        (unsigned long long)st.hits, (unsigned long long)st.prefetch_hits, (unsigned long long)st.misses,
        (unsigned long long)st.loads, (unsigned long long)st.prefetch_loads, (unsigned long long)st.bytes_loaded,
        ci.reader);
    printf("out[0][0..3] = %.6f %.6f %.6f %.6f\n", out[0][0], out[0][1], out[0][2], out[0][3]);
    printf("unlimited budget bit-identical to the file reference: %s\n", same_full ? "yes" : "NO");
    printf("small budget bit-identical to the file reference: %s\n", same_small ? "yes" : "NO");

    int ok = same_full && same_small && ci.high_water_bytes <= ci.budget_bytes;
    moe_context_destroy(small);
    moe_context_destroy(full);
    moe_model_close(e.model);
    for (int i = 0; i < 3; ++i) free(out[i]);
    free(x0);
    free(e.ref_expert);
    free(e.acc);
    free(e.y);
    free(e.h);
    free(e.logits);
    free(e.router);
    return ok ? 0 : 1;
}
