/* moe_runtime.h: the C API of moe-runtime. Two layers:
 *  - the expert offloading layer (expert cache + prefetcher + streaming), so another inference engine keeps its
 *    own kernels and loop and gets experts larger than VRAM/RAM paged in from the model files on demand
 *    (moe_model, moe_context, moe_handle);
 *  - the full runtime, for engines that just want to run a model: load it, tokenize, evaluate, sample, generate
 *    (moe_engine; see "the full runtime" below).
 *
 * ABI rules: every object is an opaque handle; every function returns a moe_status (0 = MOE_OK) and writes its
 * results through pointers; structs that may grow carry a `struct_size` first field (fill it with sizeof, or
 * call the *_init function) and the library reads only the fields that size covers. No C++ exception ever
 * crosses this boundary. On failure, moe_last_error() returns the detailed message (thread-local; it names the
 * file, offset or field, what was expected and what was found). Successful calls leave it unchanged.
 *
 * Minimal use (see docs/embedding.md):
 *     moe_model* m; moe_model_open("model.gguf", &m);
 *     moe_options o; moe_options_init(&o); o.expert_budget_bytes = 2ull << 30;
 *     moe_context* c; moe_context_create(m, &o, &c);
 *     moe_route(c, layer, k, ids, weights);               // router output: trace + next-layer prefetch
 *     moe_handle* h; moe_acquire(c, layer, ids[0], &h);  // pin (starts the load on a miss)
 *     moe_wait(h); moe_handle_data(h, &ptr, &bytes);      // use the bytes with your own kernel
 *     moe_release(h);
 *     moe_context_destroy(c); moe_model_close(m);
 */
#ifndef MOE_RUNTIME_H
#define MOE_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define MOE_API __attribute__((visibility("default")))
#else
#define MOE_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a function or struct field is added; the soname changes only on incompatible changes.
 * 2: the full runtime (moe_engine_*, moe_tokenize, moe_eval, moe_generate, moe_sampler_*), the host tier
 *    (moe_options.host_budget_bytes, moe_get_level_stats), model hyper-parameters in moe_model_info and
 *    resident tensors (moe_model_get_tensor_info, moe_model_read_tensor_f32).
 * 3: the prefetcher behind moe_route (modes, depth, deadlines, stale-hint cancellation: moe_options.prefetch_mode,
 *    prefetch_depth), speculative gating (moe_route_hidden, moe_layout_set_router), its statistics (moe_stats from
 *    prefetch_joins on) and its settings in moe_context_info.
 * 4: the engine's compute backend (moe_engine_options.backend, moe_engine_info.backend).
 * 5: sessions (moe_session_*: many sequences on one engine's weights and expert cache) and moe_log_set. */
#define MOE_API_VERSION 5

typedef enum moe_status {
    MOE_OK = 0,
    MOE_ERR_INVALID_ARGUMENT = 1, /* a null pointer, a bad struct_size, a malformed list */
    MOE_ERR_OUT_OF_RANGE = 2,     /* a layer, expert, file index or byte range outside its bounds */
    MOE_ERR_IO = 3,               /* a file cannot be opened or read (also: a load that failed, from moe_wait) */
    MOE_ERR_FORMAT = 4,           /* a model file is malformed or not a supported MoE model */
    MOE_ERR_BUDGET = 5,           /* the expert budget cannot hold top_k experts (one layer's pins) */
    MOE_ERR_UNKNOWN_NAME = 6,     /* unknown eviction policy name */
    MOE_ERR_UNSUPPORTED = 7,      /* valid but not available here (device tier without a GPU, ...) */
    MOE_ERR_BUSY = 8,             /* every cache slot is pinned or loading: release handles first */
    MOE_ERR_NOT_READY = 9,        /* the handle's load has not completed: call moe_wait first */
    MOE_ERR_OUT_OF_MEMORY = 10,
    MOE_ERR_INTERNAL = 11 /* an unexpected failure inside the library (a bug: please report it) */
} moe_status;

/* "MOE_OK", "MOE_ERR_IO", ...; "MOE_ERR_UNKNOWN_STATUS" for a value not listed above. Never NULL. */
MOE_API const char* moe_status_string(moe_status s);
/* The detailed message of the last failed call on this thread ("" when none failed yet). Valid until the next
 * failing call on this thread. Never NULL. */
MOE_API const char* moe_last_error(void);
/* The library version (project VERSION), e.g. "0.1.0", and its numbers. */
MOE_API const char* moe_version_string(void);
MOE_API moe_status moe_version(int* major, int* minor, int* patch);

typedef struct moe_model moe_model;     /* a model file opened and described (GGUF or safetensors) */
typedef struct moe_layout moe_layout;   /* an expert layout described by hand */
typedef struct moe_context moe_context; /* an offloader: memory tier + expert cache + streamer + predictor */
typedef struct moe_handle moe_handle;   /* a pin on one expert (ready, or its load in flight) */

/* ---- models ------------------------------------------------------------------------------------------------ */

/* Opens a GGUF file (shard 1 of a split set pulls in the others), a .safetensors file, an index json or a
 * directory, validates it and builds its expert layout. MOE_ERR_IO: cannot open; MOE_ERR_FORMAT: malformed. */
MOE_API moe_status moe_model_open(const char* path, moe_model** out);
MOE_API void moe_model_close(moe_model* model); /* NULL is fine */

typedef struct moe_model_info {
    uint32_t struct_size;        /* sizeof(moe_model_info) */
    int32_t n_layers;            /* MoE layers (the layer index of every other call counts these only) */
    int32_t n_experts;           /* routed experts per MoE layer */
    int32_t top_k;               /* experts selected per token and layer */
    int32_t n_embd;              /* hidden size (0 for a hand-made layout) */
    int32_t n_ff_exp;            /* routed expert width (0 for a hand-made layout) */
    int32_t n_files;             /* files the model spans */
    uint64_t max_expert_bytes;   /* largest expert: the cache's slot size is this rounded up to 4 KiB */
    uint64_t total_expert_bytes; /* all routed experts */
    const char* arch;            /* "llama", "qwen3moe", ... ("custom" for a layout); owned by the model */
    const char* name;            /* general.name or model_type; owned by the model */
    /* API version 2: what an engine of its own needs to run the model (see moe_model_read_tensor_f32). */
    int32_t n_blocks; /* transformer blocks (the tensor names' blk.N); n_layers counts MoE blocks only */
    int32_t n_vocab;
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim_k;
    int32_t head_dim_v;
    int32_t n_rot;      /* dims rotated by RoPE (the first n_rot of each head) */
    int32_t rope_style; /* 0: adjacent pairs (x[2i], x[2i+1]) as GGUF llama; 1: halves (NEOX) */
    float rope_freq_base;
    float rms_eps;
    int32_t gating;             /* 0: softmax over all experts; 1: sigmoid; 2: softmax over the selected */
    int32_t norm_topk;          /* nonzero: the selected weights are renormalised to sum to 1 */
    float expert_weights_scale; /* multiplies the selected weights (1 = none) */
} moe_model_info;
MOE_API moe_status moe_model_get_info(const moe_model* model, moe_model_info* info);

typedef enum moe_part_kind {
    MOE_PART_GATE = 0,
    MOE_PART_UP,
    MOE_PART_DOWN,
    MOE_PART_GATE_UP,
    MOE_PART_GATE_BIAS,
    MOE_PART_UP_BIAS,
    MOE_PART_DOWN_BIAS,
    MOE_PART_GATE_UP_BIAS,
    MOE_PART_GATE_UP_SCALES,
    MOE_PART_DOWN_SCALES
} moe_part_kind;

/* One piece of an expert as packed into its cache slot: the slot holds the parts back to back, in order. */
typedef struct moe_expert_part {
    uint32_t struct_size; /* sizeof(moe_expert_part) */
    int32_t kind;         /* moe_part_kind */
    const char* type;     /* tensor type as GGUF spells it: "F32", "F16", "Q8_0", ...; owned by the model */
    uint64_t slot_offset; /* byte offset of this part inside the expert's slot */
    uint64_t bytes;
    int32_t file;         /* index of the file holding it */
    uint64_t file_offset; /* absolute offset in that file */
} moe_expert_part;
/* Writes up to `capacity` parts of (layer, expert) and the total count to *n_parts (call with capacity 0 to
 * size the array). Every element of `parts` must have struct_size set. */
MOE_API moe_status moe_model_get_expert_parts(const moe_model* model, int32_t layer, int32_t expert,
                                              moe_expert_part* parts, size_t capacity, size_t* n_parts);
MOE_API moe_status moe_model_get_expert_bytes(const moe_model* model, int32_t layer, int32_t expert, uint64_t* bytes);

/* A tensor of the model file by its stored name ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
 * for engines that compute the resident part (attention, norms, routers, embeddings) themselves. */
typedef struct moe_tensor_info {
    uint32_t struct_size; /* sizeof(moe_tensor_info) */
    const char* type;     /* "F32", "F16", "Q8_0", ...; owned by the model */
    int32_t n_dims;
    int64_t ne[4]; /* ggml order: ne[0] is the contiguous dimension (a row); unused dims are 1 */
    uint64_t n_elements;
    uint64_t bytes; /* bytes in the file */
    int32_t file;
    uint64_t file_offset;
} moe_tensor_info;
/* MOE_ERR_UNKNOWN_NAME when the model has no tensor of that name. */
MOE_API moe_status moe_model_get_tensor_info(const moe_model* model, const char* name, moe_tensor_info* info);
/* Reads the tensor as F32 (decoding F16, BF16 and the ggml block types) into dst, which holds `capacity`
 * floats: MOE_ERR_INVALID_ARGUMENT when capacity < n_elements, MOE_ERR_UNSUPPORTED for a type that cannot be
 * decoded, MOE_ERR_IO when the bytes cannot be read. */
MOE_API moe_status moe_model_read_tensor_f32(const moe_model* model, const char* name, float* dst, size_t capacity);

/* ---- hand-made layouts (an engine that parses its own files) -------------------------------------------- */

typedef struct moe_range {
    uint64_t offset; /* absolute byte offset in the file */
    uint64_t bytes;
} moe_range;

MOE_API moe_status moe_layout_create(int32_t n_layers, int32_t n_experts, int32_t top_k, moe_layout** out);
MOE_API void moe_layout_destroy(moe_layout* layout); /* NULL is fine */
/* Registers a file (it must exist and be readable); its index is written to *file_index (0, 1, ...). */
MOE_API moe_status moe_layout_add_file(moe_layout* layout, const char* path, int32_t* file_index);
/* Sets the byte ranges of (layer, expert), packed into the slot in the given order (replaces earlier ones).
 * Each range must lie inside the file. Every expert must be set before a context is created. */
MOE_API moe_status moe_layout_set_expert(moe_layout* layout, int32_t layer, int32_t expert, int32_t file_index,
                                         size_t n_ranges, const moe_range* ranges);
/* API version 3. The router of MoE `layer` for speculative gating (moe_route_hidden): W holds (n_experts, n_embd)
 * F32 logits weights, row e = expert e (as ggml's {n_embd, n_experts} ffn_gate_inp or PyTorch's [n_experts,
 * hidden] gate.weight); it is copied. Every router must have the same n_embd (> 0). Contexts in a spec mode need
 * the routers of every layer after the first (layer 0's is never applied ahead; setting it is fine). */
MOE_API moe_status moe_layout_set_router(moe_layout* layout, int32_t layer, const float* W, int32_t n_embd);

/* ---- contexts ---------------------------------------------------------------------------------------------- */

typedef enum moe_tier_kind {
    MOE_TIER_RAM = 0,    /* plain host memory (the CPU mode: experts larger than RAM paged from NVMe) */
    MOE_TIER_PINNED = 1, /* page-locked host memory (cudaHostAlloc with a GPU, else mlock, best effort) */
    MOE_TIER_DEVICE = 2  /* GPU memory: handle pointers are device addresses (CUDA builds with a GPU only) */
} moe_tier_kind;

typedef enum moe_reader_kind {
    MOE_READER_AUTO = 0, /* io_uring + O_DIRECT when possible, falling back (with a warning) */
    MOE_READER_URING_DIRECT = 1,
    MOE_READER_URING_BUFFERED = 2,
    MOE_READER_PREAD = 3,
    MOE_READER_PREAD_DIRECT = 4
} moe_reader_kind;

/* What the prefetcher guesses from (contexts and engines; docs/prefetch.md). */
typedef enum moe_prefetch_mode {
    MOE_PREFETCH_NONE = 0,
    MOE_PREFETCH_SPEC = 1,    /* speculative gating: later layers' routers on the current hidden state */
    MOE_PREFETCH_HISTORY = 2, /* co-activation history */
    MOE_PREFETCH_BOTH = 3     /* spec's guesses first, then history's */
} moe_prefetch_mode;

typedef struct moe_options {
    uint32_t struct_size;         /* sizeof(moe_options); moe_options_init sets it */
    uint64_t expert_budget_bytes; /* bytes of the expert tier (VRAM for DEVICE); 0 = room for every expert */
    uint64_t host_budget_bytes;   /* pinned host RAM for a second expert level under the expert tier: experts the
                                     expert tier evicted come back from RAM instead of the file. 0 (default) = none;
                                     otherwise it must hold at least as many slots as the expert tier
                                     (MOE_ERR_BUDGET). The pinned bytes never exceed it. */
    const char* policy;           /* eviction policy: "lru" (default when NULL), "lru-layer", "lfu", "lfu-recent" */
    int32_t tier;                 /* moe_tier_kind; default MOE_TIER_RAM */
    int32_t reader;               /* moe_reader_kind; default MOE_READER_AUTO */
    uint32_t queue_depth;         /* reads in flight per file (io_uring SQEs / pread threads); default 32 */
    uint32_t max_in_flight;       /* expert loads at the reader at once (the rest queue); default 4 */
    uint32_t prefetch_in_flight;  /* 0 = no prefetch (as prefetch_mode MOE_PREFETCH_NONE); default 4. Since API
                                     version 3 other values do not cap anything: the prefetcher's room rule and
                                     prefetch_k do (docs/prefetch.md) */
    uint32_t prefetch_k;          /* experts guessed per predicted layer (per predictor); default 0 = top_k */
    int32_t record_trace;         /* nonzero (default): keep every moe_route row in memory for moe_trace_write
                                     (grows with the run: set 0 for long-running services) */
    /* API version 3 */
    int32_t prefetch_mode;  /* moe_prefetch_mode: MOE_PREFETCH_HISTORY (default) learns from the rows
                               moe_route gets; MOE_PREFETCH_SPEC / BOTH also apply the next layers' routers to
                               the hidden state moe_route_hidden gets (router weights: read from the model
                               file at context creation, or moe_layout_set_router; MOE_ERR_UNSUPPORTED
                               without them) */
    int32_t prefetch_depth; /* MoE layers predicted ahead at each routed layer (>= 1); default 1 */
} moe_options;
MOE_API moe_status moe_options_init(moe_options* opts);

/* Builds the tier (every slot reserved now), the readers, the streamer, the cache and the predictor. The
 * model/layout may be closed afterwards. MOE_ERR_BUDGET when the budget holds fewer than top_k experts. */
MOE_API moe_status moe_context_create(const moe_model* model, const moe_options* opts, moe_context** out);
MOE_API moe_status moe_context_create_from_layout(const moe_layout* layout, const moe_options* opts, moe_context** out);
/* Releases every handle still held (their pointers become invalid), waits for loads in flight, frees all. */
MOE_API void moe_context_destroy(moe_context* ctx); /* NULL is fine */

typedef struct moe_context_info {
    uint32_t struct_size;      /* sizeof(moe_context_info) */
    int32_t tier;              /* moe_tier_kind */
    uint32_t n_slots;          /* experts the tier holds at once */
    uint64_t slot_bytes;       /* bytes of one slot */
    uint64_t budget_bytes;     /* the tier's budget (n_slots * slot_bytes <= budget_bytes) */
    uint64_t high_water_bytes; /* most expert bytes ever held (<= budget_bytes) */
    const char* policy;        /* owned by the context */
    const char* reader;        /* what moves the bytes: "io_uring+O_DIRECT", "pread", ...; owned by the context */
    /* API version 2: the host tier (all 0 without one). */
    uint32_t host_n_slots;
    uint64_t host_budget_bytes;
    uint64_t host_high_water_bytes; /* most expert bytes the host tier ever held (<= host_budget_bytes) */
    /* API version 3: the prefetcher as built (MOE_PREFETCH_NONE when prefetch_in_flight was 0). */
    int32_t prefetch_mode;  /* moe_prefetch_mode */
    int32_t prefetch_depth; /* capped at n_layers */
    int32_t prefetch_k;     /* experts guessed per predicted layer */
    int32_t router_n_embd;  /* the hidden size moe_route_hidden expects; 0 without router weights */
} moe_context_info;
MOE_API moe_status moe_context_get_info(const moe_context* ctx, moe_context_info* info);

/* ---- experts ----------------------------------------------------------------------------------------------- */

/* Pins (layer, expert). The handle is ready on a hit; on a miss its load has started (or a queued prefetch of
 * it was promoted to the front). MOE_ERR_BUSY when every slot is pinned or loading. Never blocks on I/O. */
MOE_API moe_status moe_acquire(moe_context* ctx, int32_t layer, int32_t expert, moe_handle** out);
/* Non-blocking: *ready = 1 once the bytes are in the slot. */
MOE_API moe_status moe_handle_ready(const moe_handle* h, int* ready);
/* Blocks until the load completes. MOE_ERR_IO (with the reader's message) when it failed; the handle then no
 * longer pins anything but must still be released. For a DEVICE tier the copy has landed when this returns. */
MOE_API moe_status moe_wait(moe_handle* h);
/* The expert's bytes (a device address for a DEVICE tier) and their count; MOE_ERR_NOT_READY before moe_wait. */
MOE_API moe_status moe_handle_data(const moe_handle* h, const void** data, uint64_t* bytes);
/* DEVICE tier: makes `cuda_stream` (a cudaStream_t) wait, on the GPU, for the copy event of the handle's slot,
 * so compute can be queued without a host round trip. MOE_ERR_UNSUPPORTED for host tiers (nothing to wait on). */
MOE_API moe_status moe_handle_stream_wait(const moe_handle* h, void* cuda_stream);
/* Unpins and frees the handle (NULL is fine; a second release is MOE_ERR_INVALID_ARGUMENT). A load still in
 * flight keeps its slot until it lands, released or not. */
MOE_API moe_status moe_release(moe_handle* h);

/* Starts loading (layer, expert) without pinning it; *issued (may be NULL) = 1 when a load started. */
MOE_API moe_status moe_prefetch(moe_context* ctx, int32_t layer, int32_t expert, int* issued);

/* Position of the next routed rows (moe-trace `seq` and `token`). Until it is first called moe_route numbers
 * tokens itself (a row whose layer is not after the previous row's layer starts the next token of sequence 0);
 * once called, every later row carries the position last set (call it per token, e.g. for prefill batches). */
MOE_API moe_status moe_set_position(moe_context* ctx, uint32_t seq, uint32_t token);
/* Feeds one token's router output at `layer`: `n` (1..top_k) distinct expert ids in rank order and their
 * weights (may be NULL). Records the row (trace), feeds the prefetcher (its co-activation history learns from
 * it, and prefetches it issued for this layer that were not selected, or for earlier layers, are cancelled if
 * still queued) and, in the history modes, prefetches the experts it predicts for layers layer+1 ..
 * layer+prefetch_depth (past the last layer: the next token's first layers). See docs/embedding.md.
 * moe_route_ex also writes the number of prefetch loads it started to *n_prefetched (may be NULL). */
MOE_API moe_status moe_route(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights);
MOE_API moe_status moe_route_ex(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights,
                                uint32_t* n_prefetched);
/* API version 3. moe_route_ex plus speculative gating: `hidden` (n_embd floats) is the vector router `layer` was
 * applied to (the layer's normed FFN input); the routers of layers layer+1 .. layer+prefetch_depth are applied to
 * it and the prefetch_k experts with the highest logits of each are prefetched (MOE_PREFETCH_BOTH: then the
 * history's guesses fill up). Call it instead of moe_route for that row. MOE_ERR_UNSUPPORTED when the context's
 * prefetch_mode is not MOE_PREFETCH_SPEC or MOE_PREFETCH_BOTH; MOE_ERR_INVALID_ARGUMENT when n_embd is not the
 * routers' (moe_context_info.router_n_embd). */
MOE_API moe_status moe_route_hidden(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights,
                                    const float* hidden, size_t n_embd, uint32_t* n_prefetched);

/* ---- statistics and traces --------------------------------------------------------------------------------- */

typedef struct moe_stats {
    uint32_t struct_size;   /* sizeof(moe_stats) */
    uint64_t hits;          /* acquires that found the expert resident */
    uint64_t prefetch_hits; /* ...of which it was brought by a prefetch and not used since (also in hits) */
    uint64_t misses;        /* acquires that started or joined a load */
    uint64_t joins;         /* ...of which joined a load already in flight */
    uint64_t evictions;
    uint64_t loads;          /* loads issued (demand + prefetch) */
    uint64_t prefetch_loads; /* ...of which prefetches */
    uint64_t failed_loads;
    uint64_t bytes_loaded; /* bytes of completed loads */
    uint64_t wait_ns;      /* time blocked in moe_wait */
    uint64_t routed_rows;  /* rows fed by moe_route (per layer: rows of that layer) */
    uint64_t predicted;    /* distinct experts the prefetcher guessed for this layer, per token */
    /* API version 3: the prefetcher (docs/prefetch.md defines each figure). What became of prefetch loads: */
    uint64_t prefetch_joins;            /* misses that joined a load a prefetch had started (also in joins) */
    uint64_t cancelled_loads;           /* prefetch loads withdrawn before reading (stale hints); never failed */
    uint64_t prefetch_unused_evictions; /* prefetched experts evicted before any acquire used them */
    uint64_t prefetch_wasted_bytes;     /* ...their bytes: moved for nothing */
    uint64_t prefetch_wasted;           /* prefetch loads never used: unused evictions + cancelled loads */
    double prefetch_recall;    /* (prefetch_hits + prefetch_joins) / (hits + misses); 0 when nothing was acquired */
    double prefetch_precision; /* (prefetch_hits + prefetch_joins) / prefetch_loads; 0 without prefetch loads */
    /* What the prefetcher guessed (from the routed rows; the same at both levels): */
    uint64_t needed;             /* experts routed at this layer */
    uint64_t predicted_needed;   /* ...of which guessed for that very token */
    double prediction_recall;    /* predicted_needed / needed: the guesses' quality apart from the cache */
    uint64_t prefetch_issued;    /* guesses that started a load */
    uint64_t prefetch_already;   /* guesses already resident or loading */
    uint64_t prefetch_skipped;   /* guesses not issued: no slot to spare, or prefetch_k loads already started */
    uint64_t prefetch_cancelled; /* issued prefetches cancelled as stale while still queued */
} moe_stats;
/* Totals over every layer. */
MOE_API moe_status moe_get_stats(const moe_context* ctx, moe_stats* stats);
MOE_API moe_status moe_get_layer_stats(const moe_context* ctx, int32_t layer, moe_stats* stats);
/* Zeroes the counters of both levels and the prefetcher's (not what its history learnt). */
MOE_API moe_status moe_reset_stats(moe_context* ctx);

/* The cache levels: the expert tier (what handles point into) and the host tier under it. A hit at the host
 * level is an expert the expert tier missed and RAM still held ("RAM hit"); a host miss went to the file. */
typedef enum moe_level { MOE_LEVEL_EXPERT = 0, MOE_LEVEL_HOST = 1 } moe_level;
/* Statistics of one level, of one layer or (layer = -1) totals. MOE_ERR_OUT_OF_RANGE for MOE_LEVEL_HOST when the
 * context has no host tier. routed_rows and predicted are those of moe_route at both levels. */
MOE_API moe_status moe_get_level_stats(const moe_context* ctx, int32_t level, int32_t layer, moe_stats* stats);

/* Writes every row moe_route recorded so far as a moe-trace v1 file (replayable by `moe sim`). */
MOE_API moe_status moe_trace_write(const moe_context* ctx, const char* path);

/* ==== the full runtime ======================================================================================= *
 *
 * For engines that just want to run a model: the engine loads the resident weights, builds the expert cache
 * (and the host tier under it), the forward pass and its KV cache, and evaluates tokens; every expert goes
 * through the cache. Minimal use:
 *     moe_engine_options o; moe_engine_options_init(&o); o.expert_budget_bytes = 8ull << 30;
 *     moe_engine* e; moe_engine_create("model.gguf", &o, &e);
 *     int32_t ids[256]; size_t n; moe_tokenize(e, "Hello", 5, 1, 0, ids, 256, &n);
 *     moe_sampler_params sp; moe_sampler_params_init(&sp);               // greedy
 *     int32_t out[64]; size_t n_out;
 *     moe_generate(e, ids, n, 64, &sp, on_token, user, out, 64, &n_out); // on_token may be NULL
 *     moe_engine_destroy(e);
 * Thread safety of the handles: moe_model, moe_layout and a moe_engine's model are read-only after creation. A
 * moe_context may be called from several threads (acquire, wait, release, prefetch and the statistics are
 * thread-safe; routing calls are serialised inside). One moe_engine or moe_session is used from one thread at a
 * time; different sessions of one engine may be used from different threads, their evaluations then run one
 * after another. A moe_sampler belongs to one thread at a time. */

typedef struct moe_engine moe_engine;   /* a model loaded for inference, with its expert cache and KV cache */
typedef struct moe_sampler moe_sampler; /* token sampling state (random generator, recent tokens) */

typedef enum moe_backend_kind {
    MOE_BACKEND_CPU = 0,  /* the CPU backend: resident weights and expert slots in RAM */
    MOE_BACKEND_CUDA = 1, /* the CUDA backend: resident weights and expert slots in VRAM (MOE_ERR_UNSUPPORTED
                             without a CUDA build and a GPU) */
    MOE_BACKEND_AUTO = 2  /* CUDA when a GPU is usable, else the CPU */
} moe_backend_kind;

typedef struct moe_engine_options {
    uint32_t struct_size;         /* sizeof(moe_engine_options); moe_engine_options_init sets it */
    uint64_t expert_budget_bytes; /* memory for expert slots (VRAM with the CUDA backend, else RAM); 0 = room for
                                     every expert. MOE_ERR_BUDGET below one layer's top_k experts */
    uint64_t host_budget_bytes;   /* pinned host RAM for a second expert level under the first (0 = none); at
                                     least as many slots as the expert budget (MOE_ERR_BUDGET) */
    const char* policy;     /* eviction policy of the expert tier: NULL = "lru", "lru-layer", "lfu", "lfu-recent" */
    int32_t reader;         /* moe_reader_kind; default MOE_READER_AUTO */
    int32_t n_threads;      /* CPU threads (0 = one per hardware thread); default 1; never changes results */
    int32_t n_ctx;          /* KV cache positions of the sequence; default 2048 */
    int32_t n_batch;        /* tokens of a prompt evaluated together (each expert loaded once per batch);
                               default 32; never changes results */
    int32_t prefetch;       /* moe_prefetch_mode; default MOE_PREFETCH_NONE (docs/prefetch.md) */
    int32_t prefetch_depth; /* MoE layers predicted ahead at each layer; default 1 */
    int32_t prefetch_k;     /* experts guessed per predicted layer; default 0 = top_k */
    int32_t backend;        /* moe_backend_kind; default MOE_BACKEND_CPU (version 4) */
} moe_engine_options;
MOE_API moe_status moe_engine_options_init(moe_engine_options* opts);

/* Loads `path` (as moe_model_open reads it). MOE_ERR_IO / MOE_ERR_FORMAT as moe_model_open; MOE_ERR_UNSUPPORTED
 * for an architecture without a forward pass here; MOE_ERR_BUDGET, MOE_ERR_UNKNOWN_NAME for the options. */
MOE_API moe_status moe_engine_create(const char* path, const moe_engine_options* opts, moe_engine** out);
MOE_API void moe_engine_destroy(moe_engine* engine); /* NULL is fine */

typedef struct moe_engine_info {
    uint32_t struct_size; /* sizeof(moe_engine_info) */
    int32_t n_vocab;
    int32_t n_ctx;
    int32_t n_embd;
    int32_t n_layers; /* MoE layers (the layer index of the statistics) */
    int32_t n_experts;
    int32_t top_k;
    int32_t has_tokenizer; /* 0: the model has no tokenizer metadata (use token ids) */
    int32_t bos;           /* -1 when none (or no tokenizer) */
    int32_t eos;
    uint32_t n_slots; /* expert slots of the expert tier */
    uint64_t slot_bytes;
    uint32_t host_n_slots;    /* 0 without a host tier */
    uint64_t resident_bytes;  /* attention, embeddings, routers, norms (held in full) */
    uint64_t workspace_bytes; /* KV cache and activations */
    const char* arch;         /* owned by the engine */
    const char* name;
    const char* policy;
    const char* backend; /* "cpu" or "cuda" (version 4) */
} moe_engine_info;
MOE_API moe_status moe_engine_get_info(const moe_engine* engine, moe_engine_info* info);

/* -- text ---------------------------------------------------------------------------------------------------- *
 * Every function here returns MOE_ERR_UNSUPPORTED when the model has no tokenizer. Outputs follow one rule:
 * the full count is written to *n_tokens / *n_bytes, at most `capacity` elements are written (call with
 * capacity 0 to size the buffer), and text is NUL-terminated when capacity > *n_bytes. */

/* Text (text_len bytes, any bytes accepted) -> token ids. add_special: BOS/EOS as the model's metadata says;
 * parse_special: control-token texts in the input become their ids. */
MOE_API moe_status moe_tokenize(const moe_engine* engine, const char* text, size_t text_len, int add_special,
                                int parse_special, int32_t* tokens, size_t capacity, size_t* n_tokens);
/* Token ids -> text. special: control tokens render as their text (else as nothing, and a leading BOS is
 * dropped). */
MOE_API moe_status moe_detokenize(const moe_engine* engine, const int32_t* tokens, size_t n, int special, char* text,
                                  size_t capacity, size_t* n_bytes);
/* One token's bytes, as `moe run` prints them while generating. */
MOE_API moe_status moe_token_to_piece(const moe_engine* engine, int32_t token, int special, char* text, size_t capacity,
                                      size_t* n_bytes);
/* *is_eog = 1 for an end-of-generation token (EOS, EOT, ...). */
MOE_API moe_status moe_token_is_eog(const moe_engine* engine, int32_t token, int* is_eog);

/* -- evaluation ---------------------------------------------------------------------------------------------- */

/* Starts a new sequence at position 0 (the expert cache keeps what it holds). */
MOE_API moe_status moe_engine_reset(moe_engine* engine);
/* Positions the sequence holds. */
MOE_API moe_status moe_engine_n_past(const moe_engine* engine, int32_t* n_past);
/* Evaluates n tokens after what the sequence holds (in batches of n_batch). logits may be NULL; otherwise it
 * receives the last token's n_vocab logits, or, when all_positions is nonzero, (n, n_vocab) logits of every
 * token. Bit-identical whatever n_batch, budget, policy or prefetch. MOE_ERR_OUT_OF_RANGE for a token outside
 * the vocabulary or a sequence that would pass n_ctx (nothing is evaluated then); MOE_ERR_IO when an expert
 * load failed (the sequence is unchanged). */
MOE_API moe_status moe_eval(moe_engine* engine, const int32_t* tokens, size_t n, int all_positions, float* logits);
/* Evaluates one token; *logits (may be NULL) points at its n_vocab logits, valid until the next evaluation. */
MOE_API moe_status moe_decode(moe_engine* engine, int32_t token, const float** logits);
/* The n_vocab logits of the last token evaluated (valid until the next evaluation); MOE_ERR_NOT_READY before
 * any. */
MOE_API moe_status moe_get_logits(const moe_engine* engine, const float** logits);

/* -- sampling and generation --------------------------------------------------------------------------------- */

/* llama.cpp's chain: repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw. Deterministic: one
 * seed gives the same tokens on every platform. */
typedef struct moe_sampler_params {
    uint32_t struct_size;  /* sizeof(moe_sampler_params); moe_sampler_params_init sets it */
    float temperature;     /* <= 0: greedy (argmax, lowest id on ties); default 0 */
    int32_t top_k;         /* <= 0: off (default) */
    float top_p;           /* (0, 1]; 1: off (default) */
    float min_p;           /* [0, 1]; 0: off (default) */
    float repeat_penalty;  /* > 0; 1: off (default) */
    int32_t repeat_last_n; /* tokens the penalty looks back over; default 64 (0: none, -1: all) */
    uint64_t seed;         /* default 0 */
} moe_sampler_params;
MOE_API moe_status moe_sampler_params_init(moe_sampler_params* params);

MOE_API moe_status moe_sampler_create(const moe_sampler_params* params, moe_sampler** out);
MOE_API void moe_sampler_destroy(moe_sampler* sampler); /* NULL is fine */
/* Remembers a token (prompt or generated) for the repetition penalty. */
MOE_API moe_status moe_sampler_accept(moe_sampler* sampler, int32_t token);
/* Picks a token from n_vocab logits (does not accept it). */
MOE_API moe_status moe_sampler_sample(moe_sampler* sampler, const float* logits, int32_t n_vocab, int32_t* token);

/* Called for each generated token with its text (empty without a tokenizer; not NUL-terminated); return
 * nonzero to stop after this token. */
typedef int (*moe_token_callback)(int32_t token, const char* piece, size_t piece_bytes, void* user);

/* The loop `moe run` runs: resets the sequence, evaluates the prompt (n_prompt >= 1 ids), then samples and
 * decodes until n_predict tokens, an end-of-generation token (not emitted), a full context, or the callback
 * asks to stop. Writes up to `capacity` generated ids to `tokens` (may be NULL with capacity 0) and the count
 * to *n_generated. params NULL: greedy. */
MOE_API moe_status moe_generate(moe_engine* engine, const int32_t* prompt, size_t n_prompt, int32_t n_predict,
                                const moe_sampler_params* params, moe_token_callback callback, void* user,
                                int32_t* tokens, size_t capacity, size_t* n_generated);

/* -- sessions ------------------------------------------------------------------------------------------------ *
 *
 * More conversations on one engine. A session has its own sequence and KV cache (n_ctx positions) and shares the
 * engine's model (the resident weights exist once, however many sessions) and its expert cache (an expert loaded
 * for one session serves all). A session's logits and tokens are bit-identical to what the engine's own sequence
 * gives for the same tokens and sampler settings, whatever the other sessions do. Destroy every session before
 * its engine. Statistics (moe_engine_get_stats) cover the shared cache, so all sessions together. */
typedef struct moe_session moe_session;

/* n_ctx: KV cache positions (0: the engine's n_ctx). Allocates the KV cache and the workspaces. */
MOE_API moe_status moe_session_create(moe_engine* engine, int32_t n_ctx, moe_session** out);
MOE_API void moe_session_destroy(moe_session* session); /* NULL is fine */
MOE_API moe_status moe_session_reset(moe_session* session);
MOE_API moe_status moe_session_n_past(const moe_session* session, int32_t* n_past);
/* As moe_eval, on the session's sequence. */
MOE_API moe_status moe_session_eval(moe_session* session, const int32_t* tokens, size_t n, int all_positions,
                                    float* logits);
/* As moe_generate, on the session's sequence. */
MOE_API moe_status moe_session_generate(moe_session* session, const int32_t* prompt, size_t n_prompt, int32_t n_predict,
                                        const moe_sampler_params* params, moe_token_callback callback, void* user,
                                        int32_t* tokens, size_t capacity, size_t* n_generated);

/* -- statistics ---------------------------------------------------------------------------------------------- */

/* Cache statistics of one level (moe_level) of the engine, of one MoE layer or (layer = -1) totals.
 * MOE_ERR_OUT_OF_RANGE for MOE_LEVEL_HOST without a host tier. routed_rows is 0 (the engine routes internally);
 * the prefetcher's figures (predicted, needed, ...) count decode steps, 0 with MOE_PREFETCH_NONE. */
MOE_API moe_status moe_engine_get_stats(const moe_engine* engine, int32_t level, int32_t layer, moe_stats* stats);

/* -- logging ------------------------------------------------------------------------------------------------- */

/* The library's own messages: warnings about a degraded but working path (no io_uring or O_DIRECT here, buffers
 * that could not be pinned, a model key it ignores, ...) and errors (a ring that failed, the last words of an
 * internal check before it aborts). Failed calls still report through their status and moe_last_error(). */
typedef enum moe_log_level { MOE_LOG_DEBUG = 0, MOE_LOG_INFO = 1, MOE_LOG_WARN = 2, MOE_LOG_ERROR = 3 } moe_log_level;

/* text: one message, NUL-terminated, without a level prefix or trailing newline, valid during the call only.
 * Called from whichever thread the message comes from (a reader or loader thread as well as the caller's), and
 * possibly from several threads at once; it must not block for long. */
typedef void (*moe_log_callback)(moe_log_level level, const char* text, void* user_data);

/* Sends every later message of this library to `cb` with `user_data` instead of stderr (process-wide).
 * NULL restores the default: warnings and errors written to stderr as "warning: ..." / "error: ..." lines,
 * info as plain lines, debug dropped. Thread-safe; returns once no call of the previous callback is running, so
 * its user_data may be freed then (when called from inside a callback it returns at once instead). */
MOE_API void moe_log_set(moe_log_callback cb, void* user_data);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_H */
