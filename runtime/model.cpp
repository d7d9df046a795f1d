// The model (see model.h): description, tokenizer, backend and resident weights, loaded once.
#include "runtime/model.h"

#include <algorithm>

#include "common/error.h"
#include "runtime/backend_cpu.h"
#include "runtime/backend_cuda.h"

namespace moe {

bool computes_on_cuda(backend_kind kind) {
    return kind == backend_kind::CUDA || (kind == backend_kind::AUTO && cuda_backend_available());
}

type_support compute_type_support(bool cuda) {
    if (cuda) return [](tensor_type t) { return cuda_backend_supports(t); };
    return [](tensor_type t) { return backend_cpu_supports(t); };
}

namespace {

// The CPU backend decodes one weight row per thread into a workspace: the widest row any product of this model
// multiplies (experts, resident matrices, the shared expert, the attention output).
int64_t widest_row(const model_desc& d) {
    return std::max(
        {int64_t(d.n_embd), int64_t(d.n_ff_exp), int64_t(d.n_ff_shexp), int64_t(d.n_head) * int64_t(d.head_dim_v)});
}

}  // namespace

model::model(const std::string& path, const model_config& cfg) : _path(path) {
    _file = open_model_file(path);
    _desc = describe_model(_file);
    check_forward_supported(_desc, path);
    if (computes_on_cuda(cfg.backend))
        _be = make_backend_cuda();  // a CUDA request without a GPU fails here, before anything is read
    else
        _be = std::make_unique<backend_cpu>(widest_row(_desc), cfg.n_threads, cfg.min_parallel_work);
    load(cfg.load_progress);
}

model::model(const std::string& path, std::unique_ptr<backend> be, const load_progress_fn& progress)
    : _path(path), _be(std::move(be)) {
    MOE_CHECK(_be != nullptr);
    _file = open_model_file(path);
    _desc = describe_model(_file);
    check_forward_supported(_desc, path);
    load(progress);
}

model::~model() = default;

void model::load(const load_progress_fn& progress) {
    try {
        _tok = tokenizer::from_model_file(_file);
    } catch (const error& e) {
        _tok_error = e.what();  // no (usable) tokenizer: the model runs on token ids
    }
    _weights = std::make_unique<resident_weights>(_file, _desc, *_be, progress);
}

}  // namespace moe
