// moe_log_set: the C face of the library's log sink (common/log.h). The C callback and its user_data travel
// together in a small record handed to the C++ sink; a record is freed once the sink has been replaced and no
// call of it can still be running.
#include <new>

#include "common/log.h"
#include "moe_runtime.h"

namespace {

struct c_sink {
    moe_log_callback cb;
    void* user_data;
};

static_assert(int(moe::log_level::debug) == MOE_LOG_DEBUG && int(moe::log_level::info) == MOE_LOG_INFO &&
              int(moe::log_level::warn) == MOE_LOG_WARN && int(moe::log_level::error) == MOE_LOG_ERROR);

void forward(moe::log_level level, const char* text, void* user) {
    const c_sink* s = static_cast<const c_sink*>(user);
    s->cb(static_cast<moe_log_level>(level), text, s->user_data);
}

}  // namespace

extern "C" MOE_API void moe_log_set(moe_log_callback cb, void* user_data) {
    c_sink* fresh = nullptr;
    if (cb) {
        fresh = new (std::nothrow) c_sink{cb, user_data};
        if (!fresh) return;  // out of memory: the current sink stays
    }
    try {
        moe::log_fn previous_fn = nullptr;
        void* previous_user = nullptr;
        const bool idle = moe::swap_log_callback(fresh ? &forward : nullptr, fresh, previous_fn, previous_user);
        // Called from inside a callback, the previous record may be in use on this very stack: it is kept (leaked).
        if (idle && previous_fn == &forward) delete static_cast<c_sink*>(previous_user);
    } catch (...) {
        // The sink's mutex could not be taken (std::system_error): nothing changed, and nothing crosses into C.
        delete fresh;
    }
}
