// `moe bench io`: how fast can expert bytes come off the disk (and, with a GPU, onto the device)? Reads every
// expert of a model (or a random sample) in a random order, cold, through each reader: io_uring + O_DIRECT,
// the pread pool and mmap, and prints GB/s and experts/s beside the `fio` command that measures the same
// pattern on the same file, so the runtime can be judged against what the device itself delivers.
// Raw files work too (--file F --expert-bytes B): the file is cut into `--parts` regions ("tensors") and
// expert i is the i-th B/parts slice of each region, 32 bytes past a page boundary as in GGUF.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_kind.h"
#include "common/gpu.h"
#include "common/units.h"
#include "prefetch/checksum.h"
#include "prefetch/copy_engine.h"
#include "prefetch/expert_reader.h"
#include "prefetch/host_buffer.h"
#include "prefetch/reader_factory.h"
#include "runtime/cli/cli_args.h"
#include "runtime/cli/commands.h"
#include "runtime/model_desc.h"
#include "runtime/model_file.h"

#ifdef MOE_HAVE_CUDA
#include "prefetch/cuda/checksum.cuh"
#endif

namespace moe::cli {

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

struct workload {
    std::vector<std::string> paths;
    std::vector<uint64_t> sizes;
    std::vector<std::vector<byte_range>> experts;  // in the order they are read
    uint64_t max_expert_bytes = 0;
    uint64_t total_bytes = 0;
};

struct mode_result {
    std::string mode;
    std::string reader;
    uint64_t bytes = 0;
    uint64_t experts = 0;
    double seconds = 0;
    double resident_after_drop = 0;  // fraction of the files' pages still cached after the drop
    uint64_t checksum = 0;           // sum of per-expert checksums (--verify)
    double gbps() const { return seconds > 0 ? double(bytes) / seconds / 1e9 : 0; }
    double experts_per_s() const { return seconds > 0 ? double(experts) / seconds : 0; }
};

uint64_t file_size_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) fail("cannot stat {}: {}", path, std::strerror(errno));
    // Before anything opens it: opening a FIFO for reading waits for a writer, and a device has no size.
    if (!S_ISREG(st.st_mode)) fail("{}: expected a regular file, found {}", path, describe_file_type(st.st_mode));
    return uint64_t(st.st_size);
}

// Fraction of the file's pages in the page cache (mincore over a mapping; maps nothing in).
double resident_fraction(const std::string& path, uint64_t size) {
    if (size == 0) return 0;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) return -1;
    const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((size + page - 1) / page);
    double frac = -1;
    if (::mincore(p, size, vec.data()) == 0) {
        uint64_t n = 0;
        for (unsigned char v : vec) n += v & 1;
        frac = double(n) / double(vec.size());
    }
    ::munmap(p, size);
    return frac;
}

// Drops the files from the page cache (clean pages only: fdatasync first so pages we wrote ourselves go too).
double drop_cache(const workload& w) {
    double worst = 0;
    for (size_t i = 0; i < w.paths.size(); i++) {
        int fd = ::open(w.paths[i].c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("cannot open {}: {}", w.paths[i], std::strerror(errno));
        ::fdatasync(fd);
        int rc = ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        ::close(fd);
        if (rc != 0)
            warn_once("bench-fadvise", fmt::format("posix_fadvise(DONTNEED) on {}: {}", w.paths[i], std::strerror(rc)));
        worst = std::max(worst, resident_fraction(w.paths[i], w.sizes[i]));
    }
    return worst;
}

// Keeps `inflight` experts in flight through expert_reader and refills each slot as it completes.
struct completion_queue : expert_read_listener {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::pair<uint64_t, std::string>> done;  // (slot, error or empty)
    void expert_read_done(uint64_t tag, bool ok, std::string_view error) override {
        std::lock_guard<std::mutex> lock(mu);
        done.emplace_back(tag, ok ? std::string() : std::string(error));
        cv.notify_one();
    }
    std::pair<uint64_t, std::string> pop() {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !done.empty(); });
        auto r = std::move(done.front());
        done.pop_front();
        return r;
    }
};

mode_result run_reader_mode(const workload& w, const std::string& mode, reader_kind kind, const reader_config& cfg,
                            uint32_t inflight, bool verify) {
    mode_result r;
    r.mode = mode;
    std::vector<std::unique_ptr<file_source>> files;
    std::vector<file_source*> raw;
    for (const auto& p : w.paths) {
        files.push_back(open_file_source(p, kind, cfg));
        raw.push_back(files.back().get());
    }
    r.reader = std::string(files[0]->kind_name());
    std::vector<host_buffer> slots;
    for (uint32_t i = 0; i < inflight; i++) slots.emplace_back(w.max_expert_bytes);
    std::vector<size_t> slot_expert(inflight);
    expert_reader reader(raw);
    completion_queue q;
    r.resident_after_drop = drop_cache(w);
    const auto t0 = clock_type::now();
    size_t next = 0, finished = 0;
    auto issue = [&](uint32_t slot) {
        slot_expert[slot] = next;
        reader.read(w.experts[next], slots[slot].data(), w.max_expert_bytes, &q, slot);
        next++;
    };
    for (uint32_t s = 0; s < inflight && next < w.experts.size(); s++) issue(s);
    std::string first_error;
    while (finished < w.experts.size() && finished < next) {
        auto [slot, err] = q.pop();
        finished++;
        const auto& e = w.experts[slot_expert[slot]];
        if (!err.empty()) {
            if (first_error.empty()) first_error = err;
        } else if (verify) {
            r.checksum += checksum64(slots[slot].data(), expert_reader::packed_bytes(e));
        }
        r.bytes += expert_reader::packed_bytes(e);
        if (first_error.empty() && next < w.experts.size()) issue(uint32_t(slot));
    }
    r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    r.experts = finished;
    if (!first_error.empty()) fail("bench io ({}): {}", mode, first_error);
    return r;
}

mode_result run_mmap_mode(const workload& w, bool verify) {
    mode_result r;
    r.mode = "mmap";
    r.reader = "mmap + memcpy, 1 thread";
    std::vector<const uint8_t*> maps;
    for (size_t i = 0; i < w.paths.size(); i++) {
        int fd = ::open(w.paths[i].c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) fail("cannot open {}: {}", w.paths[i], std::strerror(errno));
        void* p = ::mmap(nullptr, w.sizes[i], PROT_READ, MAP_SHARED, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) fail("cannot mmap {}: {}", w.paths[i], std::strerror(errno));
        maps.push_back(static_cast<const uint8_t*>(p));
    }
    host_buffer slot(w.max_expert_bytes);
    r.resident_after_drop = drop_cache(w);
    const auto t0 = clock_type::now();
    for (const auto& e : w.experts) {
        uint64_t at = 0;
        for (const byte_range& br : e) {
            std::memcpy(slot.data() + at, maps[br.file] + br.offset, br.bytes);
            at += br.bytes;
        }
        if (verify) r.checksum += checksum64(slot.data(), at);
        r.bytes += at;
        r.experts++;
    }
    r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    for (size_t i = 0; i < maps.size(); i++) ::munmap(const_cast<uint8_t*>(maps[i]), w.sizes[i]);
    return r;
}

#ifdef MOE_HAVE_CUDA
// Host -> device: the copy engine from pinned memory, from pageable memory through its staging ring, and a
// plain synchronous cudaMemcpy from pinned memory as the reference; then one expert read from the file is
// checksummed on the device against the CPU.
std::vector<mode_result> run_h2d(const workload& w, const reader_config& cfg) {
    std::vector<mode_result> out;
    const uint64_t bytes = std::max<uint64_t>(w.max_expert_bytes, 1);
    const uint32_t n_slots = 4;
    const uint64_t reps = std::max<uint64_t>(8, (4ull << 30) / bytes);  // about 4 GB moved per measurement
    host_buffer pinned(bytes);
    std::vector<uint8_t> pageable(bytes);
    std::memset(pinned.data(), 1, bytes);
    std::memset(pageable.data(), 1, bytes);
    std::vector<void*> dslots(n_slots);
    for (auto& d : dslots) MOE_CUDA_CHECK(cudaMalloc(&d, bytes));
    copy_engine_config ccfg;
    ccfg.n_slots = n_slots;
    copy_engine eng(ccfg);
    auto timed = [&](const std::string& mode, const std::string& how, auto&& body) {
        body(uint64_t(2));  // warm-up
        MOE_CUDA_CHECK(cudaDeviceSynchronize());
        const auto t0 = clock_type::now();
        body(reps);
        MOE_CUDA_CHECK(cudaDeviceSynchronize());
        mode_result r;
        r.mode = mode;
        r.reader = how;
        r.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
        r.bytes = reps * bytes;
        r.experts = reps;
        out.push_back(r);
    };
    timed("h2d-copy-engine-pinned", "copy stream + per-slot events, pinned source", [&](uint64_t n) {
        for (uint64_t i = 0; i < n; i++)
            eng.copy(uint32_t(i % n_slots), dslots[i % n_slots], pinned.data(), bytes, true);
        eng.wait_all();
    });
    timed("h2d-copy-engine-staged", "copy stream, pageable source via 2 pinned staging buffers", [&](uint64_t n) {
        for (uint64_t i = 0; i < n; i++)
            eng.copy(uint32_t(i % n_slots), dslots[i % n_slots], pageable.data(), bytes, false);
        eng.wait_all();
    });
    timed("h2d-cudaMemcpy-pinned", "cudaMemcpy (synchronous), pinned source", [&](uint64_t n) {
        for (uint64_t i = 0; i < n; i++)
            MOE_CUDA_CHECK(cudaMemcpy(dslots[i % n_slots], pinned.data(), bytes, cudaMemcpyHostToDevice));
    });
    // File -> pinned -> device, checked on the device.
    std::vector<std::unique_ptr<file_source>> files;
    std::vector<file_source*> raw;
    for (const auto& p : w.paths) {
        files.push_back(open_file_source(p, reader_kind::AUTO, cfg));
        raw.push_back(files.back().get());
    }
    expert_reader reader(raw);
    const auto& e = w.experts.front();
    const uint64_t n = expert_reader::packed_bytes(e);
    reader.read_sync(e, pinned.data(), bytes);
    eng.copy(0, dslots[0], pinned.data(), n, true);
    eng.wait(0);
    const uint64_t host_sum = checksum64(pinned.data(), n);
    const uint64_t dev_sum = checksum64_device(dslots[0], n, eng.stream());
    if (host_sum != dev_sum)
        fail("bench io: device checksum {:016x} of the first expert differs from the file's {:016x}", dev_sum,
             host_sum);
    for (auto& m : out) m.checksum = dev_sum;
    for (auto& d : dslots) MOE_CUDA_CHECK(cudaFree(d));
    return out;
}
#endif

workload model_workload(const std::string& path) {
    model_file f = open_model_file(path);
    model_desc d = describe_model(f);
    workload w;
    w.paths = f.paths;
    w.sizes = f.file_sizes;
    for (const expert_entry& e : d.layout.experts) {
        std::vector<byte_range> rs;
        for (const expert_range& r : e.ranges) rs.push_back({uint32_t(r.file), r.offset, r.bytes});
        w.experts.push_back(std::move(rs));
    }
    if (w.experts.empty()) fail("{}: the model has no routed experts to read", path);
    return w;
}

workload raw_workload(const std::string& path, uint64_t expert_bytes, uint32_t parts) {
    if (parts == 0) fail("--parts: expected at least 1, found 0");
    const uint64_t size = file_size_of(path);
    const uint64_t part = expert_bytes / parts / 32 * 32;
    if (part == 0) fail("--expert-bytes {}: too small for {} parts of at least 32 bytes", expert_bytes, parts);
    const uint64_t base = 32;  // GGUF data is 32-byte aligned, not page-aligned
    const uint64_t region = size > base ? (size - base) / parts / 32 * 32 : 0;
    const uint64_t n = region / part;
    if (n == 0) fail("--file {}: {} bytes hold no expert of {} bytes in {} parts", path, size, expert_bytes, parts);
    workload w;
    w.paths = {path};
    w.sizes = {size};
    for (uint64_t i = 0; i < n; i++) {
        std::vector<byte_range> rs;
        for (uint32_t p = 0; p < parts; p++) rs.push_back({0, base + p * region + i * part, part});
        w.experts.push_back(std::move(rs));
    }
    return w;
}

std::string fio_command(const workload& w, uint32_t qd) {
    // Same pattern: random reads of one expert's size, same queue depth, same file, O_DIRECT, io_uring.
    uint64_t avg = w.total_bytes / std::max<size_t>(1, w.experts.size());
    uint64_t bs = std::max<uint64_t>(4096, (avg + 4095) / 4096 * 4096);
    return fmt::format(
        "fio --name=moe-experts --filename={} --readonly --rw=randread --bs={} --iodepth={} "
        "--direct=1 --ioengine=io_uring --size={} --io_size={} --norandommap --randrepeat=0 "
        "--invalidate=1 --group_reporting",
        w.paths[0], bs, qd, w.sizes[0] / bs * bs, std::max<uint64_t>(bs, w.total_bytes / bs * bs));
}

std::vector<std::string> split_modes(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream ss(text);
    std::string m;
    while (std::getline(ss, m, ',')) {
        if (m.empty()) continue;
        try {
            if (m != "mmap") parse_reader_kind(m, "--modes");  // throws on unknown names
        } catch (const error& e) {
            throw usage_error(e.what());
        }
        if (m == "auto")
            fail_usage("--modes: 'auto' is not a mode: name uring, uring-buffered, pread, pread-direct or mmap");
        out.push_back(m);
    }
    if (out.empty()) fail_usage("--modes: empty list");
    return out;
}

int run_bench_io(int argc, char** argv) {
    CLI::App app{
        "Measure expert reads from the model file (io_uring O_DIRECT, pread, mmap; cold cache) and, with a "
        "GPU, host->device copies",
        "moe bench io"};
    std::string model, file, expert_text, chunk_text = "1M", modes_text = "uring,pread,mmap";
    uint64_t sample = 0, seed = 1;
    uint32_t qd = 32, inflight = 4, parts = 3;
    bool as_json = false, verify = false, no_gpu = false;
    app.add_option("-m,--model", model, "model file (GGUF / safetensors / directory)");
    app.add_option("--file", file, "a raw file instead of a model (needs --expert-bytes)");
    app.add_option("--expert-bytes", expert_text, "with --file: bytes per expert (e.g. 12M)");
    app.add_option("--parts", parts, "with --file: ranges per expert (gate/up/down = 3)")
        ->capture_default_str()
        ->check(unsigned_integer());
    app.add_option("--sample", sample, "read a random sample of N experts (0: all)")
        ->capture_default_str()
        ->check(unsigned_integer());
    app.add_option("--qd", qd, "reads in flight (io_uring queue depth, pread threads)")
        ->capture_default_str()
        ->check(unsigned_integer());
    app.add_option("--chunk", chunk_text, "largest single read")->capture_default_str();
    app.add_option("--inflight", inflight, "experts in flight (destination slots)")
        ->capture_default_str()
        ->check(unsigned_integer());
    app.add_option("--modes", modes_text, "comma list of uring, uring-buffered, pread, pread-direct, mmap")
        ->capture_default_str();
    app.add_option("--seed", seed, "order/sample seed")->capture_default_str()->check(unsigned_integer());
    app.add_flag("--verify", verify, "checksum every expert and check all modes read the same bytes");
    app.add_flag("--no-gpu", no_gpu, "skip the host->device measurements");
    app.add_flag("--json", as_json, "print one JSON object");
    if (auto status = parse_args(app, argc, argv)) return *status;
    if (model.empty() == file.empty()) fail_usage("give exactly one of -m MODEL or --file FILE");
    if (!file.empty() && expert_text.empty()) fail_usage("--file needs --expert-bytes (the size of one expert)");
    if (qd == 0) fail_usage("--qd: expected at least 1, found 0");
    if (inflight == 0) fail_usage("--inflight: expected at least 1, found 0");
    const std::vector<std::string> modes = split_modes(modes_text);
    reader_config cfg;
    cfg.queue_depth = qd;
    cfg.chunk_bytes = parse_bytes(chunk_text, "--chunk");

    workload w =
        model.empty() ? raw_workload(file, parse_bytes(expert_text, "--expert-bytes"), parts) : model_workload(model);
    std::mt19937_64 rng(seed);
    std::shuffle(w.experts.begin(), w.experts.end(), rng);  // routing order is not file order
    if (sample && sample < w.experts.size()) w.experts.resize(sample);
    for (const auto& e : w.experts) {
        const uint64_t b = expert_reader::packed_bytes(e);
        w.max_expert_bytes = std::max(w.max_expert_bytes, b);
        w.total_bytes += b;
    }

    std::vector<mode_result> results;
    for (const std::string& m : modes) {
        if (m == "mmap")
            results.push_back(run_mmap_mode(w, verify));
        else
            results.push_back(run_reader_mode(w, m, parse_reader_kind(m, "--modes"), cfg, inflight, verify));
    }
    bool ineffective = false;
    for (const auto& r : results) ineffective |= r.resident_after_drop > 0.05;
    if (ineffective)
        warn_once("bench-drop",
                  "posix_fadvise(DONTNEED) left more than 5% of the file cached (dirty or mapped pages?): "
                  "the numbers below are partly warm");
    if (verify)
        for (const auto& r : results)
            if (r.checksum != results.front().checksum)
                fail("bench io: mode {} read different bytes (checksum {:016x}) than mode {} ({:016x})", r.mode,
                     r.checksum, results.front().mode, results.front().checksum);
#ifdef MOE_HAVE_CUDA
    if (!no_gpu && gpu_count() > 0)
        for (auto& r : run_h2d(w, cfg)) results.push_back(r);
#else
    (void)no_gpu;
#endif
    const std::string fio = fio_command(w, qd);

    if (as_json) {
        json j;
        j["files"] = w.paths;
        j["experts"] = w.experts.size();
        j["expert_bytes_max"] = w.max_expert_bytes;
        j["bytes"] = w.total_bytes;
        j["qd"] = qd;
        j["chunk_bytes"] = cfg.chunk_bytes;
        j["inflight_experts"] = inflight;
        j["gpu"] = gpu_description();
        j["modes"] = json::array();
        for (const auto& r : results) {
            json m{
                {"mode", r.mode},   {"reader", r.reader},   {"gbps", r.gbps()},    {"experts_per_s", r.experts_per_s()},
                {"bytes", r.bytes}, {"seconds", r.seconds}, {"experts", r.experts}};
            if (r.mode.rfind("h2d", 0) != 0) m["resident_after_drop"] = r.resident_after_drop;
            if (verify || r.mode.rfind("h2d", 0) == 0) m["checksum"] = fmt::format("{:016x}", r.checksum);
            j["modes"].push_back(m);
        }
        j["fio_command"] = fio;
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    std::printf("moe bench io: %zu experts, %s (largest %s), %zu file(s), qd %u, chunk %s, %u experts in flight\n",
                w.experts.size(), format_bytes(w.total_bytes).c_str(), format_bytes(w.max_expert_bytes).c_str(),
                w.paths.size(), qd, format_bytes(cfg.chunk_bytes).c_str(), inflight);
    std::printf("%-24s %-46s %9s %12s %10s %9s\n", "mode", "reader", "GB/s", "experts/s", "seconds", "cached");
    for (const auto& r : results)
        std::printf("%-24s %-46s %9.2f %12.1f %10.3f %9s\n", r.mode.c_str(), r.reader.c_str(), r.gbps(),
                    r.experts_per_s(), r.seconds,
                    r.mode.rfind("h2d", 0) == 0 ? "-" : fmt::format("{:.1f}%", 100 * r.resident_after_drop).c_str());
    if (verify)
        std::printf("checksum of all experts: %016llx (every mode agrees)\n",
                    (unsigned long long)results.front().checksum);
    std::printf("cached: page-cache residency of the file right after the drop, before the mode ran\n");
    std::printf("same pattern with fio:\n  %s\n", fio.c_str());
    return 0;
}

}  // namespace

int run_bench(int argc, char** argv) {
    if (argc >= 2 && std::strcmp(argv[1], "io") == 0) return run_bench_io(argc - 1, argv + 1);
    if (argc >= 2 && std::strcmp(argv[1], "run") == 0) return run_bench_run(argc - 1, argv + 1);
    std::fprintf(
        argc >= 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0) ? stdout : stderr,
        "usage: moe bench io (-m MODEL | --file F --expert-bytes B) [--sample N] [--qd 32] [--json] "
        "[--modes uring,pread,mmap]\n"
        "       moe bench run -m MODEL [--budgets 100,50,25] [--prompt-tokens 64] [--gen-tokens 32] "
        "[--threads N] [--routing-trace T] [--json] [--llama-cpp auto|off]\n"
        "  io   expert reads from the file (io_uring O_DIRECT, pread, mmap; cold) and host->device copies\n"
        "  run  prompt and decode tokens/s at several expert budgets, beside llama.cpp when installed\n");
    return argc >= 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0) ? 0 : 2;
}

}  // namespace moe::cli
