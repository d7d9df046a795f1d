// The engine (see engine.h): a model, an offloader and a session from one engine_config.
#include "runtime/engine.h"

#include <algorithm>

namespace moe {

model_config model_config_of(const engine_config& cfg) {
    model_config mc;
    mc.backend = cfg.backend;
    mc.n_threads = cfg.n_threads;
    mc.min_parallel_work = cfg.min_parallel_work;
    mc.load_progress = cfg.load_progress;
    return mc;
}

offload_config offload_config_of(const engine_config& cfg, const model& m) {
    return offload_config_of(cfg, m.expert_tier());
}

offload_config offload_config_of(const engine_config& cfg, tier_kind tier) {
    offload_config oc;
    oc.tier = tier;
    oc.expert_budget_bytes = cfg.expert_budget_bytes;
    oc.host_budget_bytes = cfg.host_budget_bytes;
    oc.policy = cfg.policy;
    oc.reader = cfg.reader;
    oc.streaming = cfg.streaming;
    oc.prefetch = cfg.prefetch;
    oc.prefetch_window = uint32_t(std::max(1, cfg.n_batch));
    return oc;
}

session_config session_config_of(const engine_config& cfg) {
    return session_config{cfg.n_ctx, cfg.n_batch};
}

uint64_t engine::slot_bytes_for(const model_desc& desc) {
    return offload_slot_bytes(desc.layout.max_expert_bytes);
}

engine::engine(const std::string& model_path, const engine_config& cfg) : _scfg(session_config_of(cfg)) {
    _model = std::make_unique<model>(model_path, model_config_of(cfg));
    try {
        _off = std::make_unique<offloader>(offload_layout_of(_model->file(), _model->desc()),
                                           offload_config_of(cfg, *_model));
    } catch (const config_error& e) {
        throw config_error(e.fault, model_path + ": " + e.what());  // name the model, as every load error does
    }
    _session = std::make_unique<session>(*_model, *_off, _scfg);
}

engine::~engine() = default;

std::span<const prefetcher_layer_stats> engine::prefetch_stats() const {
    const prefetcher* p = _off->prefetch();
    return p ? std::span<const prefetcher_layer_stats>(p->stats()) : std::span<const prefetcher_layer_stats>();
}

}  // namespace moe
