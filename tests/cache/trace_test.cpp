// moe-trace v1 reader/writer: every rejection names the line and the reason (one test per kind of error),
// tolerated variations (blank lines, CRLF, empty weights), exact write -> read round trips, the fixtures.
#include "cache/trace.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "cache/trace_gen.h"
#include "common/error.h"

namespace moe {
namespace {

const std::string HDR = "# moe-trace v1 model=tiny n_layers=2 n_experts=8 top_k=2\nseq,token,layer,experts,weights\n";
constexpr const char* COLS = "seq,token,layer,experts,weights\n";

routing_trace parse(const std::string& text) {
    std::istringstream in(text);
    return parse_trace(in, "trace.csv");
}

// Expects parse to throw with exactly `msg` as the message.
void expect_error(const std::string& text, const std::string& msg) {
    try {
        parse(text);
        ADD_FAILURE() << "no error, expected: " << msg;
    } catch (const error& e) {
        EXPECT_EQ(std::string(e.what()), msg);
    }
}

TEST(trace_read, parses_rows_in_rank_order) {
    routing_trace t = parse(HDR + "0,0,0,3 7,0.612 0.388\n0,0,1,1 5,\n1,4,1,6,\n");
    EXPECT_EQ(t.model, "tiny");
    EXPECT_EQ(t.n_layers, 2u);
    EXPECT_EQ(t.n_experts, 8u);
    EXPECT_EQ(t.top_k, 2u);
    ASSERT_EQ(t.rows.size(), 3u);
    EXPECT_EQ(t.rows[0].experts, (std::vector<uint32_t>{3, 7}));
    EXPECT_EQ(t.rows[0].weights, (std::vector<float>{0.612f, 0.388f}));
    EXPECT_EQ(t.rows[1].layer, 1u);
    EXPECT_TRUE(t.rows[1].weights.empty());
    EXPECT_EQ(t.rows[2].seq, 1u);
    EXPECT_EQ(t.rows[2].token, 4u);
    EXPECT_EQ(t.rows[2].experts, (std::vector<uint32_t>{6}));  // fewer than top_k is allowed
    EXPECT_EQ(t.n_accesses(), 5u);
    EXPECT_EQ(t.n_tokens(), 2u);
}

TEST(trace_read, tolerates_blank_lines_and_crlf) {
    routing_trace t = parse(
        "# moe-trace v1 model=tiny n_layers=2 n_experts=8 top_k=2\r\n\r\nseq,token,layer,experts,"
        "weights\r\n0,0,0,3 7,0.5 0.5\r\n\r\n0,0,1,1 5,\r\n\n");
    ASSERT_EQ(t.rows.size(), 2u);
    EXPECT_EQ(t.rows[0].weights, (std::vector<float>{0.5f, 0.5f}));
    EXPECT_EQ(t.rows[1].experts, (std::vector<uint32_t>{1, 5}));
}

TEST(trace_read, empty_file) {
    expect_error("", "trace.csv: empty file, expected header '# moe-trace v1 ...'");
}

TEST(trace_read, bad_magic) {
    expect_error("# moe-trace v2 model=x n_layers=1 n_experts=2 top_k=1\n",
                 "trace.csv:1: expected header '# moe-trace v1 model=<name> n_layers=<L> n_experts=<E> top_k=<K>', "
                 "found '# moe-trace v2 model=x n_layers=1 n_experts=2 top_k=1'");
}

TEST(trace_read, header_missing_field) {
    expect_error("# moe-trace v1 model=x n_layers=1 top_k=1\n", "trace.csv:1: header lacks n_experts=");
}

TEST(trace_read, header_bad_number) {
    expect_error("# moe-trace v1 model=x n_layers=two n_experts=2 top_k=1\n",
                 "trace.csv:1: header n_layers 'two' is not a non-negative 32-bit integer");
}

TEST(trace_read, header_not_key_value) {
    expect_error("# moe-trace v1 model=x n_layers=1 n_experts=2 top_k=1 junk\n",
                 "trace.csv:1: header field 'junk' is not key=value");
}

TEST(trace_read, header_zero_or_topk_too_large) {
    expect_error("# moe-trace v1 model=x n_layers=0 n_experts=2 top_k=1\n",
                 "trace.csv:1: header n_layers, n_experts and top_k must be positive (got 0, 2, 1)");
    expect_error("# moe-trace v1 model=x n_layers=1 n_experts=2 top_k=3\n",
                 "trace.csv:1: header top_k=3 exceeds n_experts=2");
}

TEST(trace_read, missing_column_line) {
    expect_error("# moe-trace v1 model=x n_layers=1 n_experts=2 top_k=1\n",
                 "trace.csv: missing column line 'seq,token,layer,experts,weights' after the header");
}

TEST(trace_read, wrong_column_line) {
    expect_error(
        "# moe-trace v1 model=x n_layers=1 n_experts=2 top_k=1\nseq,token,layer,experts\n",
        "trace.csv:2: expected column line 'seq,token,layer,experts,weights', found 'seq,token,layer,experts'");
}

TEST(trace_read, field_count) {
    expect_error(HDR + "0,0,0,3 7,0.5 0.5\n0,0,1,3\n",
                 "trace.csv:4: expected 5 fields (seq,token,layer,experts,weights), found 4");
}

TEST(trace_read, integer_does_not_parse) {
    expect_error(HDR + "0,x1,0,3 7,\n", "trace.csv:3: token 'x1' is not a non-negative 32-bit integer");
    expect_error(HDR + "-1,0,0,3 7,\n", "trace.csv:3: seq '-1' is not a non-negative 32-bit integer");
    expect_error(HDR + "0,0,0,3 7a,\n", "trace.csv:3: expert id '7a' is not a non-negative 32-bit integer");
}

TEST(trace_read, layer_out_of_range) {
    expect_error(HDR + "0,0,2,3 7,\n", "trace.csv:3: layer 2 out of range [0, 2)");
}

TEST(trace_read, expert_out_of_range) {
    expect_error(HDR + "0,0,0,3 7,\n0,0,1,9 1,\n", "trace.csv:4: expert id 9 out of range [0, 8)");
}

TEST(trace_read, duplicate_expert) {
    expect_error(HDR + "0,0,0,3 3,\n", "trace.csv:3: expert id 3 appears twice in the row");
}

TEST(trace_read, too_many_or_no_experts) {
    expect_error(HDR + "0,0,0,3 4 5,\n", "trace.csv:3: row selects 3 experts, more than top_k=2");
    expect_error(HDR + "0,0,0,,\n", "trace.csv:3: row selects no experts (expected 1..2)");
}

TEST(trace_read, weight_does_not_parse) {
    expect_error(HDR + "0,0,0,3 4,0.5 abc\n", "trace.csv:3: weight 'abc' is not a finite number");
    expect_error(HDR + "0,0,0,3 4,0.5 inf\n", "trace.csv:3: weight 'inf' is not a finite number");
}

TEST(trace_read, weight_count_mismatch) {
    expect_error(HDR + "0,0,0,3 4,0.5\n",
                 "trace.csv:3: 1 weights for 2 experts (expected the same count, or an empty field)");
}

TEST(trace_read, missing_file) {
    try {
        read_trace("/nonexistent/x.trace");
        ADD_FAILURE() << "no error";
    } catch (const error& e) {
        EXPECT_EQ(std::string(e.what()), "/nonexistent/x.trace: cannot open trace file: No such file or directory");
    }
}

// Header sizes are checked against the documented limits before anything is sized from them.
TEST(trace_read, header_beyond_the_limits) {
    expect_error("# moe-trace v1 model=m n_layers=20000 n_experts=8 top_k=2\n",
                 "trace.csv:1: header n_layers=20000 is above the limit of 4096 layers");
    expect_error("# moe-trace v1 model=m n_layers=2 n_experts=100000 top_k=2\n",
                 "trace.csv:1: header n_experts=100000 is above the limit of 65536 experts per layer");
    expect_error("# moe-trace v1 model=m n_layers=2 n_experts=4096 top_k=2000\n",
                 "trace.csv:1: header top_k=2000 is above the limit of 1024");
    expect_error("# moe-trace v1 model=m n_layers=4096 n_experts=4096 top_k=2\n",
                 "trace.csv:1: header n_layers x n_experts = 4096 x 4096 = 16777216 experts is above the limit of "
                 "4194304 experts in all");
    // At the limits: accepted.
    routing_trace t = parse("# moe-trace v1 model=m n_layers=64 n_experts=65536 top_k=1024\n" + std::string(COLS));
    EXPECT_EQ(t.n_experts, 65536u);
}

// A line is read only up to the limit: a stream without line ends costs bounded memory.
TEST(trace_read, line_length_is_bounded) {
    expect_error(std::string(k_trace_max_line_bytes + 1, 'x'),
                 "trace.csv:1: line longer than the limit of 65536 bytes (not a moe-trace v1 file?)");
    expect_error(HDR + "0,0,0,1," + std::string(k_trace_max_line_bytes, ' ') + "\n",
                 "trace.csv:3: line longer than the limit of 65536 bytes (not a moe-trace v1 file?)");
    // A line of exactly the limit is read (and refused for what it holds, not for its length).
    std::string row = "0,0,0,1," + std::string(k_trace_max_line_bytes - 8, ' ');
    EXPECT_EQ(parse(HDR + row + "\n").rows.size(), 1u);
}

// Pieces of the file quoted in messages are escaped: no control byte reaches the terminal, a NUL cuts nothing.
TEST(trace_read, quoted_text_is_escaped) {
    expect_error(HDR + "0,0,0,1\x1b[2J,\n", "trace.csv:3: expert id '1\\x1b[2J' is not a non-negative 32-bit integer");
    expect_error(HDR + std::string("0,0,0,1,0.5", 11) + std::string("\0x", 2) + "\n",
                 "trace.csv:3: weight '0.5\\x00x' is not a finite number");
}

TEST(trace_read, special_files_are_refused_before_reading) {
    try {
        read_trace("/dev/zero");
        ADD_FAILURE() << "no error";
    } catch (const error& e) {
        EXPECT_EQ(std::string(e.what()),
                  "/dev/zero: cannot read trace file: expected a regular file, found a character device");
    }
    // A FIFO without a writer: opening it for reading would block; it is refused at once.
    const std::string fifo = ::testing::TempDir() + "trace_test_fifo";
    ::unlink(fifo.c_str());
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    try {
        read_trace(fifo);
        ADD_FAILURE() << "no error";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("expected a regular file, found a FIFO"), std::string::npos) << e.what();
    }
    ::unlink(fifo.c_str());
}

TEST(trace_write, round_trip_is_exact) {
    synth_params p;
    p.n_layers = 4;
    p.n_experts = 16;
    p.top_k = 3;
    p.n_tokens = 50;
    p.n_seqs = 3;
    routing_trace t = generate_trace(p);
    t.rows[5].weights.clear();  // a row without weights survives too
    std::stringstream ss;
    write_trace(ss, t);
    routing_trace u = parse_trace(ss, "mem");
    EXPECT_EQ(u.model, t.model);
    EXPECT_EQ(u.n_layers, t.n_layers);
    EXPECT_EQ(u.n_experts, t.n_experts);
    EXPECT_EQ(u.top_k, t.top_k);
    ASSERT_EQ(u.rows.size(), t.rows.size());
    for (size_t i = 0; i < t.rows.size(); ++i) {
        EXPECT_EQ(u.rows[i].seq, t.rows[i].seq);
        EXPECT_EQ(u.rows[i].token, t.rows[i].token);
        EXPECT_EQ(u.rows[i].layer, t.rows[i].layer);
        EXPECT_EQ(u.rows[i].experts, t.rows[i].experts);
        EXPECT_EQ(u.rows[i].weights, t.rows[i].weights);  // bit-exact floats
    }
    std::stringstream again;
    write_trace(again, u);
    EXPECT_EQ(again.str(), ss.str());
}

TEST(trace_write, refuses_model_name_with_space) {
    routing_trace t;
    t.model = "a b";
    t.n_layers = t.n_experts = t.top_k = 1;
    std::stringstream ss;
    EXPECT_THROW(write_trace(ss, t), error);
}

TEST(trace_gen, deterministic_well_formed_and_skewed) {
    synth_params p;
    p.n_layers = 3;
    p.n_experts = 32;
    p.top_k = 4;
    p.n_tokens = 400;
    p.seed = 5;
    p.skew = 1.2;
    routing_trace a = generate_trace(p), b = generate_trace(p);
    ASSERT_EQ(a.rows.size(), 1200u);
    std::vector<uint64_t> uses(32, 0);
    for (size_t i = 0; i < a.rows.size(); ++i) {
        const auto& r = a.rows[i];
        EXPECT_EQ(r.experts, b.rows[i].experts);
        EXPECT_EQ(r.layer, i % 3);
        ASSERT_EQ(r.experts.size(), 4u);
        float sum = 0;
        for (size_t j = 0; j < 4; ++j) {
            sum += r.weights[j];
            if (j > 0) {
                EXPECT_GE(r.weights[j - 1], r.weights[j]);  // rank order
            }
        }
        EXPECT_NEAR(sum, 1.0f, 1e-5f);
        if (r.layer == 0) {
            for (uint32_t e : r.experts) uses[e]++;
        }
    }
    // Zipf 1.2 over 32 experts: the most used expert of layer 0 is far above uniform (400*4/32 = 50).
    EXPECT_GT(*std::max_element(uses.begin(), uses.end()), 150u);
    p.seed = 6;
    EXPECT_NE(generate_trace(p).rows[0].experts, a.rows[0].experts);
    p.top_k = 40;
    EXPECT_THROW(generate_trace(p), error);
}

TEST(trace_gen, reuse_one_repeats_the_previous_token) {
    synth_params p;
    p.n_layers = 2;
    p.n_experts = 16;
    p.top_k = 2;
    p.n_tokens = 20;
    p.reuse = 1.0;
    routing_trace t = generate_trace(p);
    for (size_t i = 2; i < t.rows.size(); ++i) EXPECT_EQ(t.rows[i].experts, t.rows[i - 2].experts);
}

// Sizes are refused before anything is allocated: these would need terabytes.
TEST(trace_gen, sizes_beyond_the_limits_are_refused) {
    auto refused = [](synth_params p, const std::string& part) {
        try {
            generate_trace(p);
            ADD_FAILURE() << "no error, expected: " << part;
        } catch (const error& e) {
            EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
        }
    };
    synth_params p;
    p.n_layers = 1000000;
    p.n_experts = 1000000;
    refused(p, "n_layers=1000000 is above the limit of 4096 layers");
    p.n_layers = 32;
    refused(p, "n_experts=1000000 is above the limit of 65536 experts per layer");
    p.n_experts = 8;
    p.n_tokens = uint64_t(1) << 40;
    refused(p, "above the limit of 2097152 rows");
    p.n_tokens = uint64_t(-1);  // tokens x layers would wrap around
    refused(p, "above the limit of 2097152 rows");
    p.n_experts = 1024;
    p.top_k = 1024;
    p.n_tokens = 60000;  // 1.92M rows (within the limit), 1.97G accesses
    refused(p, "above the limit of 16777216 expert accesses");
}

TEST(trace_fixtures, committed_traces_read) {
    for (const char* f : {"tests/fixtures/traces/tiny.trace", "tests/fixtures/traces/mixtral_like.trace"}) {
        routing_trace t = read_trace(std::string(MOE_SOURCE_DIR) + "/" + f);
        EXPECT_GT(t.rows.size(), 0u) << f;
    }
}

}  // namespace
}  // namespace moe
