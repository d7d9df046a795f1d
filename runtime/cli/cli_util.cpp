// Helpers shared by `moe run` and `moe bench run` (see cli_util.h).
#include "runtime/cli/cli_util.h"

#include <fmt/format.h>

#include <sstream>

#include "common/error.h"
#include "common/units.h"

namespace moe::cli {

std::vector<std::string> split_commas(const std::string& text) {
    std::vector<std::string> items;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) items.push_back(item);
    return items;
}

std::optional<int> parse_int(const std::string& item) {
    size_t used = 0;
    int v = 0;
    try {
        v = std::stoi(item, &used);
    } catch (const std::exception&) {
        return std::nullopt;
    }
    if (used == 0 || used != item.size()) return std::nullopt;
    return v;
}

backend_kind parse_backend(std::string_view name) {
    if (name == "cpu") return backend_kind::CPU;
    if (name == "cuda") return backend_kind::CUDA;
    return backend_kind::AUTO;
}

}  // namespace moe::cli
