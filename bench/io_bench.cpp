// Microbenchmarks of the I/O path's CPU cost, with the disk taken out: reads of a page-cached file in /dev/shm
// through each reader at several chunk sizes (bounce + copy overhead, completion handling), and the checksum's
// CPU reference. `moe bench io` measures the real thing (cold reads from the model's disk).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "prefetch/checksum.h"
#include "prefetch/expert_reader.h"
#include "prefetch/reader_factory.h"

namespace {

constexpr uint64_t file_bytes = 256ull << 20;
constexpr uint64_t expert_bytes = 12ull << 20;  // three 4 MiB ranges, 32 bytes past page boundaries

const std::string& bench_file() {
    static const std::string path = [] {
        std::string p = "/dev/shm/moe-io-bench-XXXXXX";
        int fd = ::mkstemp(p.data());
        if (fd < 0) std::abort();
        std::vector<uint8_t> buf(1 << 20);
        std::mt19937_64 rng(1);
        for (uint64_t off = 0; off < file_bytes; off += buf.size()) {
            for (auto& b : buf) b = uint8_t(rng());
            if (::write(fd, buf.data(), buf.size()) != ssize_t(buf.size())) std::abort();
        }
        ::close(fd);
        std::atexit([] { ::unlink(bench_file().c_str()); });
        return p;
    }();
    return path;
}

void read_experts(benchmark::State& state, moe::reader_kind kind) {
    moe::reader_config cfg;
    cfg.chunk_bytes = uint64_t(state.range(0));
    cfg.queue_depth = 32;
    auto src = moe::open_file_source(bench_file(), kind, cfg);
    moe::expert_reader reader({src.get()});
    std::vector<uint8_t> slot(expert_bytes);
    const uint64_t part = expert_bytes / 3, region = (file_bytes - 32) / 3;
    uint64_t e = 0;
    const uint64_t n_experts = region / part;
    for (auto _ : state) {
        std::vector<moe::byte_range> ranges;
        for (uint64_t p = 0; p < 3; p++) ranges.push_back({0, 32 + p * region + (e % n_experts) * part, part});
        reader.read_sync(ranges, slot.data(), slot.size());
        benchmark::DoNotOptimize(slot.data());
        e++;
    }
    state.SetBytesProcessed(int64_t(state.iterations() * expert_bytes));
    state.SetLabel(std::string(src->kind_name()));
}

void BM_uring_warm(benchmark::State& s) {
    read_experts(s, moe::reader_kind::URING_DIRECT);
}
void BM_uring_buffered_warm(benchmark::State& s) {
    read_experts(s, moe::reader_kind::URING_BUFFERED);
}
void BM_pread_warm(benchmark::State& s) {
    read_experts(s, moe::reader_kind::PREAD);
}
BENCHMARK(BM_uring_warm)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->UseRealTime();
BENCHMARK(BM_uring_buffered_warm)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->UseRealTime();
BENCHMARK(BM_pread_warm)->Arg(64 << 10)->Arg(1 << 20)->Arg(4 << 20)->UseRealTime();

void BM_checksum64(benchmark::State& state) {
    std::vector<uint8_t> buf(size_t(state.range(0)), 7);
    for (auto _ : state) benchmark::DoNotOptimize(moe::checksum64(buf.data(), buf.size()));
    state.SetBytesProcessed(int64_t(state.iterations()) * state.range(0));
}
BENCHMARK(BM_checksum64)->Arg(12 << 20);

}  // namespace

BENCHMARK_MAIN();
