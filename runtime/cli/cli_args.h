// The one way every `moe` subcommand reports a command line it cannot parse: "moe <cmd>: error: <reason>" on
// stderr and exit status 2 (--help: the help on stdout, status 0). Bad flag values found after parsing throw
// moe::usage_error (common/error.h), which main.cpp turns into the same line and status.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>

namespace moe::cli {

// The exit statuses of every subcommand.
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_bad_input = 1;         // a file (model, trace) that cannot be read or is invalid
inline constexpr int k_exit_bad_flags = 2;         // unknown flags, missing ones, bad values
inline constexpr int k_exit_budget_too_small = 3;  // a budget (bytes, slots) below what one token needs

// For unsigned options: the value must be decimal digits only. CLI11 would read "-3" into an unsigned 64-bit
// option as 2^64 - 3.
CLI::Validator unsigned_integer();

// Parses argv (argv[0] is the subcommand) into `app`, whose name is the command ("moe sim"). Returns nullopt
// when the command should go on, else the status to exit with after the message was printed.
std::optional<int> parse_args(CLI::App& app, int argc, char** argv);

}  // namespace moe::cli
