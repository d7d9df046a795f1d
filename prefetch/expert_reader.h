// Reads one expert: all of its byte ranges (gate, up, down, biases: possibly in different files of a split
// model) packed in order into one contiguous destination slot, and one completion when every range has
// arrived or, after a failure, when every range already started has come back (so nothing is still writing into
// the slot when it is reported). prefetch/ does not depend on runtime/: callers convert the model's
// expert_range list into byte_range.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "prefetch/file_source.h"

namespace moe {

struct byte_range {
    uint32_t file = 0;    // index into the reader's file list (model_file::paths order)
    uint64_t offset = 0;  // absolute byte offset in that file
    uint64_t bytes = 0;
};

class expert_read_listener {
public:
    virtual ~expert_read_listener() = default;
    // ok == false: `error` names the file, the range and the failing offset with errno. Called once, from a
    // reader thread (or from inside read() when a range fails at once).
    virtual void expert_read_done(uint64_t tag, bool ok, std::string_view error) = 0;
};

class expert_reader {
public:
    // `files[i]` reads file index i; not owned, must outlive the expert_reader.
    explicit expert_reader(std::vector<file_source*> files);
    ~expert_reader();  // waits for every read in flight
    expert_reader(const expert_reader&) = delete;
    expert_reader& operator=(const expert_reader&) = delete;

    // Sum of the range sizes: the bytes read() will write at dst.
    static uint64_t packed_bytes(std::span<const byte_range> ranges);
    // Starts reading `ranges` into dst, packed in order. Throws moe::error (before any I/O) when they do not
    // fit `capacity` or name a file index that does not exist.
    void read(std::span<const byte_range> ranges, uint8_t* dst, uint64_t capacity, expert_read_listener* listener,
              uint64_t tag);
    // Blocking form: throws moe::error with the failure's message.
    void read_sync(std::span<const byte_range> ranges, uint8_t* dst, uint64_t capacity);
    // Creates the bookkeeping of `n_reads` concurrent expert reads of up to `max_ranges` ranges each now, so that
    // read() allocates nothing while no more than that overlap (start-up only; the pool still grows past it).
    void reserve(uint32_t n_reads, uint32_t max_ranges);
    uint64_t in_flight() const;

private:
    struct group;
    friend struct group;
    group* take_group();
    void give_back(group* g);

    std::vector<file_source*> _files;
    mutable std::mutex _mu;
    std::vector<std::unique_ptr<group>> _groups;  // recycled: no allocation per expert after warm-up
    std::vector<group*> _free;
    uint64_t _in_flight = 0;
    std::condition_variable _idle_cv;
};

}  // namespace moe
