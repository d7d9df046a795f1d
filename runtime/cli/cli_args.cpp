// Command-line parse errors of the subcommands (see cli_args.h).
#include "runtime/cli/cli_args.h"

#include <cstdio>

#include "common/printable.h"

namespace moe::cli {

CLI::Validator unsigned_integer() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
                return "expected a non-negative integer, found '" + printable(text) + "'";
            return "";
        },
        "UINT", "unsigned integer");
}

std::optional<int> parse_args(CLI::App& app, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        // --help and --help-all are "errors" with a success status: the help goes to stdout.
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);
        const std::string name = app.get_name();
        // The flag values are quoted in CLI11's messages as typed: escaped, as anything else from outside.
        std::fprintf(stderr, "%s: error: %s\n(see %s --help)\n", name.c_str(), printable(e.what()).c_str(),
                     name.c_str());
        return k_exit_bad_flags;
    }
    return std::nullopt;
}

}  // namespace moe::cli
