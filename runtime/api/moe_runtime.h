/* moe_runtime.h: the C API of moe-runtime's expert offloading layer (expert cache + prefetcher + streaming),
 * so another inference engine keeps its own kernels and loop and gets experts larger than VRAM/RAM paged in
 * from the model files on demand.
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

/* Bumped when a function or struct field is added; the soname changes only on incompatible changes. */
#define MOE_API_VERSION 1

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
    MOE_ERR_INTERNAL = 11         /* an unexpected failure inside the library (a bug: please report it) */
} moe_status;

/* "MOE_OK", "MOE_ERR_IO", ...; "MOE_ERR_UNKNOWN_STATUS" for a value not listed above. Never NULL. */
MOE_API const char* moe_status_string(moe_status s);
/* The detailed message of the last failed call on this thread ("" when none failed yet). Valid until the next
 * failing call on this thread. Never NULL. */
MOE_API const char* moe_last_error(void);
/* The library version (project VERSION), e.g. "0.1.0", and its numbers. */
MOE_API const char* moe_version_string(void);
MOE_API moe_status moe_version(int* major, int* minor, int* patch);

typedef struct moe_model moe_model;       /* a model file opened and described (GGUF or safetensors) */
typedef struct moe_layout moe_layout;     /* an expert layout described by hand */
typedef struct moe_context moe_context;   /* an offloader: memory tier + expert cache + streamer + predictor */
typedef struct moe_handle moe_handle;     /* a pin on one expert (ready, or its load in flight) */

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
} moe_model_info;
MOE_API moe_status moe_model_get_info(const moe_model* model, moe_model_info* info);

typedef enum moe_part_kind {
    MOE_PART_GATE = 0, MOE_PART_UP, MOE_PART_DOWN, MOE_PART_GATE_UP, MOE_PART_GATE_BIAS, MOE_PART_UP_BIAS,
    MOE_PART_DOWN_BIAS, MOE_PART_GATE_UP_BIAS, MOE_PART_GATE_UP_SCALES, MOE_PART_DOWN_SCALES
} moe_part_kind;

/* One piece of an expert as packed into its cache slot: the slot holds the parts back to back, in order. */
typedef struct moe_expert_part {
    uint32_t struct_size;  /* sizeof(moe_expert_part) */
    int32_t kind;          /* moe_part_kind */
    const char* type;      /* tensor type as GGUF spells it: "F32", "F16", "Q8_0", ...; owned by the model */
    uint64_t slot_offset;  /* byte offset of this part inside the expert's slot */
    uint64_t bytes;
    int32_t file;          /* index of the file holding it */
    uint64_t file_offset;  /* absolute offset in that file */
} moe_expert_part;
/* Writes up to `capacity` parts of (layer, expert) and the total count to *n_parts (call with capacity 0 to
 * size the array). Every element of `parts` must have struct_size set. */
MOE_API moe_status moe_model_get_expert_parts(const moe_model* model, int32_t layer, int32_t expert,
                                              moe_expert_part* parts, size_t capacity, size_t* n_parts);
MOE_API moe_status moe_model_get_expert_bytes(const moe_model* model, int32_t layer, int32_t expert,
                                              uint64_t* bytes);

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

/* ---- contexts ---------------------------------------------------------------------------------------------- */

typedef enum moe_tier_kind {
    MOE_TIER_RAM = 0,    /* plain host memory (the CPU mode: experts larger than RAM paged from NVMe) */
    MOE_TIER_PINNED = 1, /* page-locked host memory (cudaHostAlloc with a GPU, else mlock, best effort) */
    MOE_TIER_DEVICE = 2  /* GPU memory: handle pointers are device addresses (CUDA builds with a GPU only) */
} moe_tier_kind;

typedef enum moe_reader_kind {
    MOE_READER_AUTO = 0,           /* io_uring + O_DIRECT when possible, falling back (with a warning) */
    MOE_READER_URING_DIRECT = 1,
    MOE_READER_URING_BUFFERED = 2,
    MOE_READER_PREAD = 3,
    MOE_READER_PREAD_DIRECT = 4
} moe_reader_kind;

typedef struct moe_options {
    uint32_t struct_size;         /* sizeof(moe_options); moe_options_init sets it */
    uint64_t expert_budget_bytes; /* bytes of the expert tier (VRAM for DEVICE); 0 = room for every expert */
    uint64_t host_budget_bytes;   /* reserved for a host tier under a DEVICE tier; must be 0 in this version */
    const char* policy;           /* eviction policy: "lru" (default when NULL), "lru-layer", "lfu", "lfu-recent" */
    int32_t tier;                 /* moe_tier_kind; default MOE_TIER_RAM */
    int32_t reader;               /* moe_reader_kind; default MOE_READER_AUTO */
    uint32_t queue_depth;         /* reads in flight per file (io_uring SQEs / pread threads); default 32 */
    uint32_t max_in_flight;       /* expert loads at the reader at once (the rest queue); default 4 */
    uint32_t prefetch_in_flight;  /* cap on loading experts when moe_route issues prefetches; 0 = no prefetch;
                                     default 4 */
    uint32_t prefetch_k;          /* experts moe_route predicts for the next layer; default 0 = top_k */
    int32_t record_trace;         /* nonzero (default): keep every moe_route row in memory for moe_trace_write
                                     (grows with the run: set 0 for long-running services) */
} moe_options;
MOE_API moe_status moe_options_init(moe_options* opts);

/* Builds the tier (every slot reserved now), the readers, the streamer, the cache and the predictor. The
 * model/layout may be closed afterwards. MOE_ERR_BUDGET when the budget holds fewer than top_k experts. */
MOE_API moe_status moe_context_create(const moe_model* model, const moe_options* opts, moe_context** out);
MOE_API moe_status moe_context_create_from_layout(const moe_layout* layout, const moe_options* opts,
                                                  moe_context** out);
/* Releases every handle still held (their pointers become invalid), waits for loads in flight, frees all. */
MOE_API void moe_context_destroy(moe_context* ctx); /* NULL is fine */

typedef struct moe_context_info {
    uint32_t struct_size;   /* sizeof(moe_context_info) */
    int32_t tier;           /* moe_tier_kind */
    uint32_t n_slots;       /* experts the tier holds at once */
    uint64_t slot_bytes;    /* bytes of one slot */
    uint64_t budget_bytes;  /* the tier's budget (n_slots * slot_bytes <= budget_bytes) */
    uint64_t high_water_bytes; /* most expert bytes ever held (<= budget_bytes) */
    const char* policy;     /* owned by the context */
    const char* reader;     /* what moves the bytes: "io_uring+O_DIRECT", "pread", ...; owned by the context */
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
 * weights (may be NULL). Records the row (trace), updates the co-activation predictor and prefetches, for
 * layer + 1, the prefetch_k experts that most often followed the experts just selected (see docs/embedding.md).
 * moe_route_ex also writes the number of prefetch loads it started to *n_prefetched (may be NULL). */
MOE_API moe_status moe_route(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids, const float* weights);
MOE_API moe_status moe_route_ex(moe_context* ctx, int32_t layer, size_t n, const int32_t* ids,
                                const float* weights, uint32_t* n_prefetched);

/* ---- statistics and traces --------------------------------------------------------------------------------- */

typedef struct moe_stats {
    uint32_t struct_size;     /* sizeof(moe_stats) */
    uint64_t hits;            /* acquires that found the expert resident */
    uint64_t prefetch_hits;   /* ...of which it was brought by a prefetch and not used since (also in hits) */
    uint64_t misses;          /* acquires that started or joined a load */
    uint64_t joins;           /* ...of which joined a load already in flight */
    uint64_t evictions;
    uint64_t loads;           /* loads issued (demand + prefetch) */
    uint64_t prefetch_loads;  /* ...of which prefetches */
    uint64_t failed_loads;
    uint64_t bytes_loaded;    /* bytes of completed loads */
    uint64_t wait_ns;         /* time blocked in moe_wait */
    uint64_t routed_rows;     /* rows fed by moe_route (per layer: rows of that layer) */
    uint64_t predicted;       /* experts moe_route predicted for this layer (prefetched, or already there) */
} moe_stats;
/* Totals over every layer. */
MOE_API moe_status moe_get_stats(const moe_context* ctx, moe_stats* stats);
MOE_API moe_status moe_get_layer_stats(const moe_context* ctx, int32_t layer, moe_stats* stats);
MOE_API moe_status moe_reset_stats(moe_context* ctx);

/* Writes every row moe_route recorded so far as a moe-trace v1 file (replayable by `moe sim`). */
MOE_API moe_status moe_trace_write(const moe_context* ctx, const char* path);

#ifdef __cplusplus
}
#endif

#endif /* MOE_RUNTIME_H */
