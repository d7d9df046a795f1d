// An output file named on the command line (--trace, --stats-json). Checked before any work starts, so a run
// never computes for minutes and then finds it cannot write: not a directory, not an existing device or FIFO
// (/dev/full, a pipe), not the same file as an input (the model) or another output, and in a directory where a
// file can be created. Written to a temporary file beside it and renamed into place once complete, so a failed
// or interrupted write never leaves half a file where the old one was.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

namespace moe::cli {

class output_file {
public:
    // `flag` names it in messages ("--trace"). Throws usage_error for a path that cannot be an output, naming why.
    // `inputs`: files this run reads (the model's files); `others`: outputs already opened for this run.
    output_file(std::string flag, std::string path, const std::vector<std::string>& inputs,
                const std::vector<const output_file*>& others = {});
    ~output_file();  // not committed: removes the temporary
    output_file(const output_file&) = delete;
    output_file& operator=(const output_file&) = delete;

    const std::string& path() const { return _path; }
    // The temporary file to write to (buffered stdio).
    FILE* stream() { return _f; }
    // Writes all of `bytes`; throws moe::error naming the flag and the system's reason when it cannot.
    void write(std::string_view bytes);
    // Flushes, closes and renames the temporary into place; throws moe::error when any of it fails.
    void commit();

private:
    std::string _flag, _path, _tmp;
    std::string _identity;  // absolute path of what it will replace, to compare outputs with each other
    FILE* _f = nullptr;
    bool _committed = false;
};

}  // namespace moe::cli
