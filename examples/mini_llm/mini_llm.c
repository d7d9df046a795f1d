/* mini_llm: a small LLM engine of its own, in C, that gets its experts from moe-runtime through the public C
 * header (moe_runtime.h) and nothing else.
 *
 * The engine is the whole decoder: token embedding, RMSNorm, attention with its own KV cache (grouped-query,
 * RoPE in the model's style, optional per-head or whole-projection q/k norms), the router (softmax or sigmoid,
 * top-k, renormalisation), SwiGLU experts and the output head, all on the CPU, greedy decoding. From the library
 * it takes only:
 *   - the hyper-parameters (moe_model_get_info) and the resident tensors as F32 (moe_model_read_tensor_f32);
 *   - every expert through moe_acquire / moe_wait / moe_handle_data / moe_release, with an expert budget smaller
 *     than the model (default: one layer's top-k, the smallest that works), optionally a host tier under it;
 *   - moe_route, to record the routing trace and let the prefetcher's co-activation history prefetch; with
 *     --prefetch spec|both, moe_route_hidden with the normed FFN input, so the next layers' routers (read by the
 *     library from the model file) name the experts to prefetch.
 * Its arithmetic follows the reference CPU backend's (double accumulation, the same rounding points), so its
 * greedy tokens equal `moe run --prompt-ids ...` on the same model (checked in the tests: mini_llm_check.cmake).
 *
 * usage: mini_llm MODEL.gguf --prompt-ids 1,2,3 [-n 8] [--budget BYTES] [--host-budget BYTES] [--trace OUT]
 *                 [--prefetch none|spec|history|both] [--prefetch-depth D]
 * prints "tokens: a,b,c" on stdout, then the cache and prefetch statistics.
 * Supports llama (Mixtral), qwen3moe and olmoe GGUF files with F32 experts.
 */
#include <math.h>
#include <moe_runtime.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                                           \
    do {                                                                                                      \
        moe_status s_ = (call);                                                                               \
        if (s_ != MOE_OK) {                                                                                   \
            fprintf(stderr, "mini_llm: %s failed: %s: %s\n", #call, moe_status_string(s_), moe_last_error()); \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

#define MAX_TOP_K 64

typedef struct {
    float *attn_norm, *wq, *wk, *wv, *wo, *q_norm, *k_norm, *ffn_norm, *router;
    int64_t q_norm_n; /* head_dim: per head (qwen3moe); n_head * head_dim: whole projection (olmoe) */
} block;

typedef struct {
    moe_model_info hp;
    float *tok_embd, *output_norm, *output;
    block* blocks;
    uint64_t off_gate, off_up, off_down; /* where each matrix starts inside an expert's slot bytes */
    int n_ctx, n_past;
    float *k_cache, *v_cache;               /* (n_blocks, n_ctx, n_head_kv, head_dim) */
    float *x, *xn, *q, *att, *tmp, *scores; /* (n_embd) (n_embd) (n_head*hd) (n_head*hd) (n_embd) (n_ctx) */
    float *router_logits, *probs, *gate, *up, *ys, *logits; /* (E) (E) (n_ff) (n_ff) (top_k, n_embd) (n_vocab) */
    moe_model* model;
    moe_context* ctx;
    int spec; /* the prefetch mode uses the hidden state: route with moe_route_hidden */
} engine;

static void* xcalloc(size_t n, size_t size) {
    void* p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "mini_llm: out of memory\n");
        exit(1);
    }
    return p;
}

/* The tensor `name` as F32 (NULL when it is absent and optional); its element count must be `n`. */
static float* load(engine* e, const char* name, uint64_t n, int optional, int64_t* n_found) {
    moe_tensor_info ti;
    ti.struct_size = sizeof(ti);
    moe_status s = moe_model_get_tensor_info(e->model, name, &ti);
    if (s == MOE_ERR_UNKNOWN_NAME && optional) return NULL;
    CHECK(s);
    if (n && ti.n_elements != n) {
        fprintf(stderr, "mini_llm: tensor %s has %llu elements, expected %llu\n", name,
                (unsigned long long)ti.n_elements, (unsigned long long)n);
        exit(1);
    }
    if (n_found) *n_found = (int64_t)ti.n_elements;
    float* p = xcalloc((size_t)ti.n_elements, sizeof(float));
    CHECK(moe_model_read_tensor_f32(e->model, name, p, (size_t)ti.n_elements));
    return p;
}

static float* load_blk(engine* e, int b, const char* what, uint64_t n, int optional, int64_t* n_found) {
    char name[128];
    snprintf(name, sizeof(name), "blk.%d.%s.weight", b, what);
    return load(e, name, n, optional, n_found);
}

/* ---- the engine's own kernels (plain C; reductions in double) ---------------------------------------------- */

static void matvec(const float* W, const float* x, float* y, int64_t n_cols, int64_t n_rows) {
    for (int64_t r = 0; r < n_rows; ++r) {
        const float* w = W + r * n_cols;
        double acc = 0.0;
        for (int64_t c = 0; c < n_cols; ++c) acc += (double)w[c] * (double)x[c];
        y[r] = (float)acc;
    }
}

static void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += (double)x[i] * (double)x[i];
    const float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
}

static void rope(float* x, int n_heads, int head_dim, int n_rot, int pos, float base, int neox) {
    const int half = n_rot / 2;
    for (int h = 0; h < n_heads; ++h) {
        float* v = x + (size_t)h * head_dim;
        for (int i = 0; i < half; ++i) {
            const double theta = (double)pos * pow((double)base, -2.0 * i / (double)n_rot);
            const double c = cos(theta), s = sin(theta);
            float* a = neox ? v + i : v + 2 * i;
            float* b = neox ? v + i + half : v + 2 * i + 1;
            const double x0 = *a, x1 = *b;
            *a = (float)(x0 * c - x1 * s);
            *b = (float)(x0 * s + x1 * c);
        }
    }
}

/* One query token over n_kv cached positions; query head h reads kv head h / (n_head / n_head_kv). */
static void attention(engine* e, const float* k_all, const float* v_all, int n_kv) {
    const int H = e->hp.n_head, Hkv = e->hp.n_head_kv, hk = e->hp.head_dim_k, hv = e->hp.head_dim_v;
    const float scale = (float)(1.0 / sqrt((double)hk));
    for (int h = 0; h < H; ++h) {
        const int kh = h / (H / Hkv);
        const float* qh = e->q + (size_t)h * hk;
        double mx = -INFINITY, sum = 0.0;
        for (int t = 0; t < n_kv; ++t) {
            const float* k = k_all + ((size_t)t * Hkv + kh) * hk;
            double dot = 0.0;
            for (int i = 0; i < hk; ++i) dot += (double)qh[i] * (double)k[i];
            e->scores[t] = (float)(dot * scale);
            if ((double)e->scores[t] > mx) mx = e->scores[t];
        }
        for (int t = 0; t < n_kv; ++t) sum += exp((double)e->scores[t] - mx);
        for (int i = 0; i < hv; ++i) {
            double acc = 0.0;
            for (int t = 0; t < n_kv; ++t)
                acc += exp((double)e->scores[t] - mx) * (double)v_all[((size_t)t * Hkv + kh) * hv + i];
            e->att[(size_t)h * hv + i] = (float)(acc / sum);
        }
    }
}

/* Router: gating over all experts, top-k by repeated arg-max (ties to the lower id), optional renormalisation. */
static void route(engine* e, int32_t* ids, float* w) {
    const int E = e->hp.n_experts, K = e->hp.top_k;
    if (e->hp.gating == 0) {
        double mx = -INFINITY, sum = 0.0;
        for (int j = 0; j < E; ++j) mx = fmax(mx, (double)e->router_logits[j]);
        for (int j = 0; j < E; ++j) sum += exp((double)e->router_logits[j] - mx);
        for (int j = 0; j < E; ++j) e->probs[j] = (float)(exp((double)e->router_logits[j] - mx) / sum);
    } else {
        for (int j = 0; j < E; ++j) e->probs[j] = (float)(1.0 / (1.0 + exp(-(double)e->router_logits[j])));
    }
    for (int r = 0; r < K; ++r) {
        int best = -1;
        for (int j = 0; j < E; ++j) {
            int taken = 0;
            for (int q = 0; q < r; ++q) taken |= ids[q] == j;
            if (!taken && (best < 0 || e->probs[j] > e->probs[best])) best = j;
        }
        ids[r] = best;
        w[r] = e->probs[best];
    }
    if (e->hp.norm_topk) {
        double sum = 0.0;
        for (int r = 0; r < K; ++r) sum += w[r];
        if (sum < 6.103515625e-5) sum = 6.103515625e-5;
        for (int r = 0; r < K; ++r) w[r] = (float)(w[r] / sum);
    }
    if (e->hp.expert_weights_scale != 0.0f && e->hp.expert_weights_scale != 1.0f)
        for (int r = 0; r < K; ++r) w[r] *= e->hp.expert_weights_scale;
}

/* y = down(silu(gate x) * up x) with the expert's bytes from the cache slot. */
static void expert_ffn(engine* e, const uint8_t* slot, const float* x, float* y) {
    const int64_t D = e->hp.n_embd, F = e->hp.n_ff_exp;
    matvec((const float*)(slot + e->off_gate), x, e->gate, D, F);
    matvec((const float*)(slot + e->off_up), x, e->up, D, F);
    for (int64_t i = 0; i < F; ++i) {
        const float g = e->gate[i];
        e->gate[i] = (float)((double)g / (1.0 + exp(-(double)g))) * e->up[i];
    }
    matvec((const float*)(slot + e->off_down), e->gate, y, F, D);
}

/* ---- the decoder ------------------------------------------------------------------------------------------- */

static void attention_block(engine* e, int b, int pos) {
    const block* B = &e->blocks[b];
    const int H = e->hp.n_head, Hkv = e->hp.n_head_kv, hk = e->hp.head_dim_k, hv = e->hp.head_dim_v;
    const int D = e->hp.n_embd;
    const size_t row_k = (size_t)Hkv * hk, row_v = (size_t)Hkv * hv;
    float* k_all = e->k_cache + (size_t)b * e->n_ctx * row_k;
    float* v_all = e->v_cache + (size_t)b * e->n_ctx * row_v;
    float* k = k_all + (size_t)pos * row_k;
    float* v = v_all + (size_t)pos * row_v;
    rmsnorm(e->x, B->attn_norm, e->xn, D, e->hp.rms_eps);
    matvec(B->wq, e->xn, e->q, D, (int64_t)H * hk);
    matvec(B->wk, e->xn, k, D, (int64_t)row_k);
    matvec(B->wv, e->xn, v, D, (int64_t)row_v);
    if (B->q_norm && B->q_norm_n == hk) { /* per head, before RoPE */
        for (int h = 0; h < H; ++h) rmsnorm(e->q + (size_t)h * hk, B->q_norm, e->q + (size_t)h * hk, hk, e->hp.rms_eps);
        for (int h = 0; h < Hkv; ++h) rmsnorm(k + (size_t)h * hk, B->k_norm, k + (size_t)h * hk, hk, e->hp.rms_eps);
    } else if (B->q_norm) { /* over the whole projections */
        rmsnorm(e->q, B->q_norm, e->q, (int64_t)H * hk, e->hp.rms_eps);
        rmsnorm(k, B->k_norm, k, (int64_t)row_k, e->hp.rms_eps);
    }
    rope(e->q, H, hk, e->hp.n_rot, pos, e->hp.rope_freq_base, e->hp.rope_style);
    rope(k, Hkv, hk, e->hp.n_rot, pos, e->hp.rope_freq_base, e->hp.rope_style);
    attention(e, k_all, v_all, pos + 1);
    matvec(B->wo, e->att, e->tmp, (int64_t)H * hv, D);
    for (int i = 0; i < D; ++i) e->x[i] += e->tmp[i];
}

static void moe_block(engine* e, int b, int moe_layer) {
    const block* B = &e->blocks[b];
    const int D = e->hp.n_embd, K = e->hp.top_k;
    int32_t ids[MAX_TOP_K];
    float w[MAX_TOP_K];
    moe_handle* hs[MAX_TOP_K];
    rmsnorm(e->x, B->ffn_norm, e->xn, D, e->hp.rms_eps);
    matvec(B->router, e->xn, e->router_logits, D, e->hp.n_experts);
    route(e, ids, w);
    /* trace row + prefetches for the next layers (spec: their routers applied to this layer's FFN input) */
    if (e->spec)
        CHECK(moe_route_hidden(e->ctx, moe_layer, (size_t)K, ids, w, e->xn, (size_t)D, NULL));
    else
        CHECK(moe_route(e->ctx, moe_layer, (size_t)K, ids, w));
    /* Pin the whole top-k first so the loads overlap (the budget holds one layer's top-k), then compute. */
    for (int r = 0; r < K; ++r) CHECK(moe_acquire(e->ctx, moe_layer, ids[r], &hs[r]));
    for (int r = 0; r < K; ++r) {
        const void* bytes = NULL;
        uint64_t n = 0;
        CHECK(moe_wait(hs[r]));
        CHECK(moe_handle_data(hs[r], &bytes, &n));
        expert_ffn(e, (const uint8_t*)bytes, e->xn, e->ys + (size_t)r * D);
        CHECK(moe_release(hs[r]));
    }
    for (int i = 0; i < D; ++i) { /* weighted sum in rank order, whatever order the experts arrived in */
        float acc = 0.0f;
        for (int r = 0; r < K; ++r) acc += w[r] * e->ys[(size_t)r * D + i];
        e->x[i] += acc;
    }
}

/* Evaluates one token at the next position; leaves its logits in e->logits. */
static void decode(engine* e, int32_t token) {
    const int D = e->hp.n_embd;
    if (e->n_past >= e->n_ctx) {
        fprintf(stderr, "mini_llm: context of %d positions is full\n", e->n_ctx);
        exit(1);
    }
    memcpy(e->x, e->tok_embd + (size_t)token * D, sizeof(float) * (size_t)D);
    CHECK(moe_set_position(e->ctx, 0, (uint32_t)e->n_past));
    int moe_layer = 0;
    for (int b = 0; b < e->hp.n_blocks; ++b) {
        attention_block(e, b, e->n_past);
        if (e->blocks[b].router)
            moe_block(e, b, moe_layer++);
        else {
            fprintf(stderr, "mini_llm: block %d has no router (dense FFN blocks are not supported)\n", b);
            exit(1);
        }
    }
    rmsnorm(e->x, e->output_norm, e->xn, D, e->hp.rms_eps);
    matvec(e->output, e->xn, e->logits, D, e->hp.n_vocab);
    ++e->n_past;
}

static int32_t argmax(const float* v, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; ++i)
        if (v[i] > v[best]) best = i;
    return best;
}

/* ---- set-up ------------------------------------------------------------------------------------------------ */

static void find_expert_parts(engine* e) {
    moe_expert_part parts[8];
    size_t n = 0;
    for (int i = 0; i < 8; ++i) parts[i].struct_size = sizeof(moe_expert_part);
    CHECK(moe_model_get_expert_parts(e->model, 0, 0, parts, 8, &n));
    int found = 0;
    for (size_t i = 0; i < n && i < 8; ++i) {
        if (strcmp(parts[i].type, "F32") != 0) {
            fprintf(stderr, "mini_llm: expert part %zu has type %s; this example multiplies F32 experts only\n", i,
                    parts[i].type);
            exit(1);
        }
        if (parts[i].kind == MOE_PART_GATE) e->off_gate = parts[i].slot_offset, found |= 1;
        if (parts[i].kind == MOE_PART_UP) e->off_up = parts[i].slot_offset, found |= 2;
        if (parts[i].kind == MOE_PART_DOWN) e->off_down = parts[i].slot_offset, found |= 4;
    }
    if (found != 7) {
        fprintf(stderr, "mini_llm: expected separate gate, up and down expert matrices\n");
        exit(1);
    }
}

static void load_model(engine* e) {
    moe_model_info* hp = &e->hp;
    const uint64_t D = (uint64_t)hp->n_embd, V = (uint64_t)hp->n_vocab;
    const uint64_t qd = (uint64_t)hp->n_head * (uint64_t)hp->head_dim_k;
    const uint64_t kd = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim_k;
    const uint64_t vd = (uint64_t)hp->n_head_kv * (uint64_t)hp->head_dim_v;
    e->tok_embd = load(e, "token_embd.weight", V * D, 0, NULL);
    e->output_norm = load(e, "output_norm.weight", D, 0, NULL);
    e->output = load(e, "output.weight", V * D, 1, NULL);
    if (!e->output) e->output = e->tok_embd; /* tied embeddings */
    e->blocks = xcalloc((size_t)hp->n_blocks, sizeof(block));
    for (int b = 0; b < hp->n_blocks; ++b) {
        block* B = &e->blocks[b];
        B->attn_norm = load_blk(e, b, "attn_norm", D, 0, NULL);
        B->wq = load_blk(e, b, "attn_q", qd * D, 0, NULL);
        B->wk = load_blk(e, b, "attn_k", kd * D, 0, NULL);
        B->wv = load_blk(e, b, "attn_v", vd * D, 0, NULL);
        B->wo = load_blk(e, b, "attn_output", D * (uint64_t)hp->n_head * (uint64_t)hp->head_dim_v, 0, NULL);
        B->q_norm = load_blk(e, b, "attn_q_norm", 0, 1, &B->q_norm_n);
        B->k_norm = load_blk(e, b, "attn_k_norm", 0, 1, NULL);
        B->ffn_norm = load_blk(e, b, "ffn_norm", D, 0, NULL);
        B->router = load_blk(e, b, "ffn_gate_inp", (uint64_t)hp->n_experts * D, 1, NULL);
    }
    const size_t C = (size_t)e->n_ctx;
    e->k_cache = xcalloc((size_t)hp->n_blocks * C * kd, sizeof(float));
    e->v_cache = xcalloc((size_t)hp->n_blocks * C * vd, sizeof(float));
    e->x = xcalloc(D, sizeof(float));
    e->xn = xcalloc(D, sizeof(float));
    e->q = xcalloc(qd, sizeof(float));
    e->att = xcalloc((size_t)hp->n_head * (size_t)hp->head_dim_v, sizeof(float));
    e->tmp = xcalloc(D, sizeof(float));
    e->scores = xcalloc(C, sizeof(float));
    e->router_logits = xcalloc((size_t)hp->n_experts, sizeof(float));
    e->probs = xcalloc((size_t)hp->n_experts, sizeof(float));
    e->gate = xcalloc((size_t)hp->n_ff_exp, sizeof(float));
    e->up = xcalloc((size_t)hp->n_ff_exp, sizeof(float));
    e->ys = xcalloc((size_t)hp->top_k * D, sizeof(float));
    e->logits = xcalloc(V, sizeof(float));
}

static void free_model(engine* e) {
    free(e->tok_embd);
    free(e->output_norm);
    if (e->output != e->tok_embd) free(e->output);
    for (int b = 0; b < e->hp.n_blocks; ++b) {
        block* B = &e->blocks[b];
        free(B->attn_norm), free(B->wq), free(B->wk), free(B->wv), free(B->wo);
        free(B->q_norm), free(B->k_norm), free(B->ffn_norm), free(B->router);
    }
    free(e->blocks);
    free(e->k_cache), free(e->v_cache), free(e->x), free(e->xn), free(e->q), free(e->att), free(e->tmp);
    free(e->scores), free(e->router_logits), free(e->probs), free(e->gate), free(e->up), free(e->ys), free(e->logits);
}

/* The decimal number at *p (digits only: no sign or space) if it is at most `max`, advancing *p past it; -1 when
 * there is none or it is larger (no wrap-around). */
static int64_t parse_digits(const char** p, int64_t max) {
    int64_t v = 0;
    const char* s = *p;
    if (*s < '0' || *s > '9') return -1;
    for (; *s >= '0' && *s <= '9'; ++s) {
        const int64_t d = *s - '0';
        if (v > (max - d) / 10) return -1;
        v = v * 10 + d;
    }
    *p = s;
    return v;
}

/* The whole of `text` as a number in [min, max], or -1. */
static int64_t parse_count(const char* text, int64_t min, int64_t max) {
    const char* p = text;
    const int64_t v = parse_digits(&p, max);
    return v < min || *p != '\0' ? -1 : v;
}

/* "1,2,3" -> ids; -1 for anything else (a sign, a space, an empty item, an id above INT32_MAX, more than cap). */
static int parse_ids(const char* text, int32_t* ids, int cap) {
    int n = 0;
    const char* p = text;
    while (*p) {
        const int64_t v = parse_digits(&p, INT32_MAX);
        if (v < 0 || n == cap) return -1;
        ids[n++] = (int32_t)v;
        if (*p == ',' && p[1] != '\0')
            ++p;
        else if (*p)
            return -1;
    }
    return n;
}

static void print_level(const char* name, const moe_stats* s) {
    printf("%s: %llu hits, %llu misses, %llu loads, %llu evictions, %llu bytes loaded\n", name,
           (unsigned long long)s->hits, (unsigned long long)s->misses, (unsigned long long)s->loads,
           (unsigned long long)s->evictions, (unsigned long long)s->bytes_loaded);
}

static int parse_prefetch_mode(const char* s) {
    const char* names[] = {"none", "spec", "history", "both"}; /* the moe_prefetch_mode values, in order */
    for (int i = 0; i < 4; ++i)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

#define USAGE                                                                                                     \
    "usage: mini_llm MODEL.gguf --prompt-ids 1,2,3 [-n 8] [--budget BYTES] [--host-budget BYTES] [--trace OUT]\n" \
    "                [--prefetch none|spec|history|both] [--prefetch-depth D]\n"                                  \
    "  --prompt-ids    comma-separated token ids of the prompt\n"                                                 \
    "  -n              tokens to generate, 1..65536 (default 8)\n"                                                \
    "  --budget        expert budget in bytes (default: one layer's top-k slots)\n"                               \
    "  --host-budget   pinned host tier in bytes (default: none)\n"                                               \
    "  --trace         write the routing trace (moe-trace v1)\n"                                                  \
    "  --prefetch      prefetch mode (default history); --prefetch-depth D: layers ahead, 1..65536\n"

/* A bad command line: the reason and the usage on stderr, status 2. */
static int bad_usage(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mini_llm: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n" USAGE);
    va_end(ap);
    return 2;
}

int main(int argc, char** argv) {
    const char *path = NULL, *ids_text = NULL, *trace_out = NULL;
    uint64_t budget = 0, host_budget = 0;
    int n_predict = 8, prefetch = MOE_PREFETCH_HISTORY, depth = 1;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (a[0] != '-') {
            if (path) return bad_usage("unexpected argument '%s' (the model is '%s')", a, path);
            path = a;
            continue;
        }
        static const char* const with_value[] = {"--prompt-ids", "-n",         "--budget",        "--host-budget",
                                                 "--trace",      "--prefetch", "--prefetch-depth"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; ++k) known |= !strcmp(a, with_value[k]);
        if (!known) return bad_usage("unknown argument %s", a);
        if (i + 1 >= argc) return bad_usage("%s needs a value", a);
        const char* v = argv[++i];
        int64_t x = 0;
        if (!strcmp(a, "--prompt-ids")) {
            ids_text = v;
        } else if (!strcmp(a, "-n")) {
            if ((x = parse_count(v, 1, 65536)) < 0) return bad_usage("-n '%s': expected a count in 1..65536", v);
            n_predict = (int)x;
        } else if (!strcmp(a, "--budget") || !strcmp(a, "--host-budget")) {
            if ((x = parse_count(v, 1, INT64_MAX)) < 0)
                return bad_usage("%s '%s': expected a positive number of bytes (digits only)", a, v);
            *(!strcmp(a, "--budget") ? &budget : &host_budget) = (uint64_t)x;
        } else if (!strcmp(a, "--trace")) {
            trace_out = v;
        } else if (!strcmp(a, "--prefetch")) {
            if ((prefetch = parse_prefetch_mode(v)) < 0)
                return bad_usage("--prefetch '%s': expected none, spec, history or both", v);
        } else if ((x = parse_count(v, 1, 65536)) < 0) {
            return bad_usage("--prefetch-depth '%s': expected a count in 1..65536", v);
        } else {
            depth = (int)x;
        }
    }
    if (!path) return bad_usage("no MODEL given");
    if (!ids_text) return bad_usage("no --prompt-ids given");
    int32_t prompt[1024];
    const int n_prompt = parse_ids(ids_text, prompt, 1024);
    if (n_prompt <= 0) {
        return bad_usage("--prompt-ids '%s': expected 1 to 1024 comma-separated token ids, each in 0..2147483647",
                         ids_text);
    }

    engine e;
    memset(&e, 0, sizeof(e));
    CHECK(moe_model_open(path, &e.model));
    e.hp.struct_size = sizeof(e.hp);
    CHECK(moe_model_get_info(e.model, &e.hp));
    if (strcmp(e.hp.arch, "llama") != 0 && strcmp(e.hp.arch, "qwen3moe") != 0 && strcmp(e.hp.arch, "olmoe") != 0) {
        fprintf(stderr, "mini_llm: architecture %s is not supported (llama/Mixtral, qwen3moe, olmoe)\n", e.hp.arch);
        return 1;
    }
    if (e.hp.top_k > MAX_TOP_K || e.hp.gating > 1 || e.hp.n_blocks != e.hp.n_layers) {
        fprintf(stderr, "mini_llm: unsupported routing (top_k %d, gating %d) or dense blocks\n", e.hp.top_k,
                e.hp.gating);
        return 1;
    }
    for (int i = 0; i < n_prompt; ++i)
        if (prompt[i] < 0 || prompt[i] >= e.hp.n_vocab) {
            fprintf(stderr, "mini_llm: token id %d is outside the vocabulary [0, %d)\n", prompt[i], e.hp.n_vocab);
            return 2;
        }
    e.n_ctx = n_prompt + n_predict;
    find_expert_parts(&e);
    load_model(&e);

    /* The expert budget: by default one layer's top-k slots, the least that works and less than the model. */
    const uint64_t slot = (e.hp.max_expert_bytes + 4095) / 4096 * 4096;
    if (budget == 0) budget = slot * (uint64_t)e.hp.top_k;
    moe_options o;
    CHECK(moe_options_init(&o));
    o.expert_budget_bytes = budget;
    o.host_budget_bytes = host_budget;
    o.policy = "lru";
    o.prefetch_mode = prefetch;
    o.prefetch_depth = depth;
    CHECK(moe_context_create(e.model, &o, &e.ctx));
    e.spec = prefetch == MOE_PREFETCH_SPEC || prefetch == MOE_PREFETCH_BOTH;

    /* Prompt, then greedy decoding: the token after the last prompt position is the first generated one. */
    for (int i = 0; i < n_prompt; ++i) decode(&e, prompt[i]);
    printf("tokens: ");
    for (int i = 0; i < n_predict; ++i) {
        const int32_t next = argmax(e.logits, e.hp.n_vocab);
        printf(i ? ",%d" : "%d", next);
        if (i + 1 < n_predict) decode(&e, next);
    }
    printf("\n");

    moe_context_info ci;
    ci.struct_size = sizeof(ci);
    CHECK(moe_context_get_info(e.ctx, &ci));
    printf("model: %d MoE layers x %d experts (%llu expert bytes); budget %llu bytes = %u slots, high water %llu\n",
           e.hp.n_layers, e.hp.n_experts, (unsigned long long)e.hp.total_expert_bytes,
           (unsigned long long)ci.budget_bytes, ci.n_slots, (unsigned long long)ci.high_water_bytes);
    moe_stats st;
    st.struct_size = sizeof(st);
    CHECK(moe_get_level_stats(e.ctx, MOE_LEVEL_EXPERT, -1, &st));
    print_level("expert tier", &st);
    printf(
        "prefetch: %llu loads, recall %.3f, precision %.3f, %llu wasted (%llu bytes), %llu cancelled, "
        "prediction recall %.3f\n",
        (unsigned long long)st.prefetch_loads, st.prefetch_recall, st.prefetch_precision,
        (unsigned long long)st.prefetch_wasted, (unsigned long long)st.prefetch_wasted_bytes,
        (unsigned long long)st.cancelled_loads, st.prediction_recall);
    if (host_budget) {
        CHECK(moe_get_level_stats(e.ctx, MOE_LEVEL_HOST, -1, &st));
        print_level("host tier (RAM hits)", &st);
    }
    if (trace_out) CHECK(moe_trace_write(e.ctx, trace_out));
    moe_context_destroy(e.ctx);
    moe_model_close(e.model);
    free_model(&e);
    return 0;
}
