// A model opened for inference: the file(s), the description (architecture, hyper-parameters, expert layout), the
// tokenizer, the backend it computes on, and the resident weights uploaded once into that backend's memory in
// their stored type. Read-only after construction and shared: any number of sessions (runtime/session.h) run on
// one model and one offloader (runtime/offloader.h), so the weights exist once however many conversations run.
//
// Thread safety: everything here is read-only except the backend, which computes for one caller at a time. A
// session takes compute_lock() for each forward step, so sessions may be driven from different threads; their
// steps then run one after another.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "cache/memory_tier.h"
#include "runtime/backend.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"
#include "runtime/resident_weights.h"
#include "runtime/tokenizer.h"

namespace moe {

// Where the forward pass computes. CPU: the reference backend (runtime/backend_cpu.h), experts in RAM slots.
// CUDA: the CUDA backend (runtime/backend_cuda.h), experts in device slots, resident weights, KV cache and
// workspaces in device memory; a moe::error without a GPU or in a build without CUDA. AUTO: CUDA when a GPU is
// present, else CPU.
enum class backend_kind { CPU, CUDA, AUTO };

// Whether `kind` computes on the GPU here (AUTO: when the CUDA backend is usable).
bool computes_on_cuda(backend_kind kind);

// The weight types the products of the CPU or the CUDA backend take as stored (resident_weights keeps those).
type_support compute_type_support(bool cuda);

struct model_config {
    backend_kind backend = backend_kind::CPU;
    int n_threads = 1;                    // CPU backend threads (0 = one per hardware thread); never changes results
    int64_t min_parallel_work = 1 << 14;  // smaller CPU matrix products stay on one thread (tests lower it)
    load_progress_fn load_progress;       // optional: progress of reading the resident weights (moe run's bar)
};

class model {
public:
    // Opens and describes the model, checks the forward pass can run it, creates the backend and loads the resident
    // weights. Throws moe::error for an unreadable, malformed or unsupported model (naming the file and what is
    // wrong) and for a CUDA backend without a GPU.
    model(const std::string& path, const model_config& cfg);
    // The same on a backend made by the caller (tests count its allocations through a wrapper).
    model(const std::string& path, std::unique_ptr<backend> be, const load_progress_fn& progress = {});
    ~model();
    model(const model&) = delete;
    model& operator=(const model&) = delete;

    const std::string& path() const { return _path; }
    const model_file& file() const { return _file; }
    const model_desc& desc() const { return _desc; }
    // The tokenizer from the file's metadata; null when the file has none (or an unusable one:
    // tokenizer_error() says why), and the model then runs on token ids.
    const tokenizer* tok() const { return _tok ? &*_tok : nullptr; }
    const std::string& tokenizer_error() const { return _tok_error; }

    backend& compute() const { return *_be; }
    bool on_gpu() const { return !_be->host_memory(); }
    // Where the offloader's compute-tier slots must live for this backend.
    tier_kind expert_tier() const { return on_gpu() ? tier_kind::DEVICE : tier_kind::RAM; }
    const resident_weights& weights() const { return *_weights; }
    // Bytes of the resident weights in the backend's memory.
    uint64_t resident_bytes() const { return _weights->bytes(); }
    // Held by a session for each forward step (the backend's stream and scratch serve one step at a time).
    std::mutex& compute_lock() const { return _compute_mu; }

private:
    void load(const load_progress_fn& progress);

    std::string _path;
    model_file _file;
    model_desc _desc;
    std::optional<tokenizer> _tok;
    std::string _tok_error;
    std::unique_ptr<backend> _be;
    std::unique_ptr<resident_weights> _weights;
    mutable std::mutex _compute_mu;
};

}  // namespace moe
