// Picks the next token from a logits vector: greedy (temperature 0) or sampled, with llama.cpp's usual filters.
// Order, as llama.cpp's default chain: repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
// top-p and min-p look at the softmax of the penalised logits before temperature (as llama.cpp does), so the
// temperature only reshapes the distribution among the tokens that survived. Everything is plain and
// deterministic: the random source is a std::mt19937_64 (whose output sequence the standard fixes) turned into
// uniforms by hand, so one seed gives the same tokens on every platform and standard library.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <vector>

namespace moe {

struct sampler_config {
    float temperature = 0.0f;     // <= 0: greedy (argmax, lowest id on ties)
    int top_k = 0;                // keep the k most likely tokens; <= 0: off
    float top_p = 1.0f;           // keep the smallest most-likely prefix with cumulative probability >= p; >= 1: off
    float min_p = 0.0f;           // keep tokens with probability >= min_p * the largest; <= 0: off
    float repeat_penalty = 1.0f;  // llama.cpp rule over the recent tokens: positive logit / r, negative * r; 1: off
    int repeat_last_n = 64;       // how many recent tokens the penalty looks at (0: none, -1: all)
    uint64_t seed = 0;
};

struct token_prob {
    int id = 0;
    float p = 0.0f;
};

class sampler {
public:
    // Throws moe::error for values outside their range (negative temperature is accepted as greedy).
    explicit sampler(const sampler_config& cfg);

    // Remembers a token (prompt or generated) for the repetition penalty.
    void accept(int token);
    // Picks the next token from n_vocab logits. Does not accept() it.
    int sample(std::span<const float> logits);
    // The distribution sample() draws from (after penalty and every filter), most likely first (ties: lower id
    // first), probabilities summing to 1. Greedy: the single argmax with p = 1.
    std::vector<token_prob> distribution(std::span<const float> logits) const;

    const sampler_config& config() const { return _cfg; }

    // llama.cpp's repetition penalty: each distinct token of `recent` has its logit divided by `penalty` when
    // positive and multiplied by it otherwise.
    static void apply_repetition_penalty(std::span<float> logits, std::span<const int> recent, float penalty);

private:
    double uniform();  // [0, 1) with 53 random bits

    sampler_config _cfg;
    std::mt19937_64 _rng;
    std::deque<int> _recent;  // the last repeat_last_n accepted tokens
};

}  // namespace moe
