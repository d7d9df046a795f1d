// Placing the resident weights in backend memory (see resident_weights.h).
#include "runtime/resident_weights.h"

namespace moe {

resident_weights::resident_weights(const model_weights& w, backend& be) : _be(be) {
    tok_embd = place(w.tok_embd);
    output_norm = place(w.output_norm);
    output = place(w.output);
    layers.resize(w.layers.size());
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const layer_weights& L = w.layers[i];
        layer_tensors& T = layers[i];
        T.attn_norm = place(L.attn_norm), T.wq = place(L.wq), T.wk = place(L.wk), T.wv = place(L.wv);
        T.wo = place(L.wo), T.q_norm = place(L.q_norm), T.k_norm = place(L.k_norm);
        T.bq = place(L.bq), T.bk = place(L.bk), T.bv = place(L.bv), T.ffn_norm = place(L.ffn_norm);
        T.sh_gate_inp = place(L.sh_gate_inp), T.sh_gate = place(L.sh_gate), T.sh_up = place(L.sh_up);
        T.sh_down = place(L.sh_down), T.router = place(L.router);
    }
}

const float* resident_weights::place(const std::vector<float>& v) {
    if (v.empty()) return nullptr;
    if (_be.host_memory()) return v.data();
    backend_array<float>& b = _buffers.emplace_back(_be, v.size());
    _be.upload(b.data(), v.data(), b.bytes());
    _bytes += b.bytes();
    return b.data();
}

}  // namespace moe
