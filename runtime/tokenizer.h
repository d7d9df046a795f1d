// The text tokenizer of a GGUF model, built from its tokenizer.ggml.* metadata and following llama.cpp:
// SentencePiece-style score-priority merges with <0xXX> byte fallback ("llama"), or byte-level BPE with the
// pre-tokenizer regexes selected by tokenizer.ggml.pre and rank-ordered merges ("gpt2"). Checked against Hugging
// Face `tokenizers` through tests/fixtures/tokenizer (scripts/make_tokenizer_fixtures.py).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "runtime/model_file.h"
#include "runtime/unicode.h"

namespace moe {

// tokenizer.ggml.token_type values.
enum class token_attr : int32_t {
    UNDEFINED = 0,
    NORMAL = 1,
    UNKNOWN = 2,
    CONTROL = 3,
    USER_DEFINED = 4,
    UNUSED = 5,
    BYTE = 6
};

enum class tokenizer_kind { SPM, BPE };

class tokenizer {
public:
    // Reads tokenizer.ggml.* from `mf`. Throws moe::error naming the key and what is wrong: missing or ill-typed
    // arrays, array lengths that disagree with the vocab, a malformed merge, an unsupported tokenizer.ggml.model
    // or an unknown tokenizer.ggml.pre. A missing tokenizer.ggml.pre uses llama.cpp's "default" regexes and warns.
    static tokenizer from_model_file(const model_file& mf);
    static tokenizer from_file(const std::string& path) { return from_model_file(open_model_file(path)); }

    // Text -> ids. add_special: BOS/EOS as the metadata says. parse_special: CONTROL and UNKNOWN token texts in
    // `text` become their ids (USER_DEFINED texts always do); otherwise they are tokenized as plain text.
    // Any byte string is accepted: bytes that are not valid UTF-8 are kept as single raw bytes (byte-level BPE
    // encodes them like any byte; SPM emits their <0xXX> byte tokens), so encode never fails on input text.
    std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = false) const;

    // Ids -> text. CONTROL/UNKNOWN tokens render as their text when `special`; otherwise they render as nothing
    // and a leading BOS / trailing EOS that add_special would add is dropped before anything else (llama.cpp
    // remove_special). SPM then drops the space that add_space_prefix put in front of the first remaining piece. The
    // result is raw bytes: a sequence cut in the middle of a UTF-8 character stays cut. No clean_up_tokenization_spaces
    // post-processing is applied.
    std::string decode(const std::vector<int32_t>& ids, bool special = true) const;
    // One token's bytes (no leading-space removal). Throws moe::error for an id outside the vocab.
    std::string token_to_piece(int32_t id, bool special = true) const;

    bool is_eog(int32_t id) const { return _eog.count(id) != 0; }
    int32_t n_vocab() const { return static_cast<int32_t>(_tokens.size()); }
    int32_t find(std::string_view text) const;  // token id of this exact vocab text, or -1
    const std::string& text(int32_t id) const { return _tokens.at(static_cast<size_t>(id)); }
    token_attr attr(int32_t id) const { return _attrs.at(static_cast<size_t>(id)); }

    tokenizer_kind kind() const { return _kind; }
    const std::string& pre() const { return _pre; }  // BPE pre-tokenizer name actually used
    int32_t bos_id() const { return _bos; }          // -1 when the model has none
    int32_t eos_id() const { return _eos; }
    int32_t unk_id() const { return _unk; }
    int32_t pad_id() const { return _pad; }
    bool add_bos() const { return _add_bos; }
    bool add_eos() const { return _add_eos; }
    bool add_space_prefix() const { return _add_space_prefix; }

    // The pre-tokenizer names accepted for tokenizer.ggml.pre.
    static std::vector<std::string> supported_pre();

private:
    void encode_spm(std::string_view text, bool prefix_space, std::vector<int32_t>& out) const;
    void encode_bpe(std::string_view text, std::vector<int32_t>& out) const;
    void bpe_word(const std::string& word, std::vector<int32_t>& out) const;
    int32_t byte_token(uint8_t byte) const;

    tokenizer_kind _kind = tokenizer_kind::SPM;
    std::string _pre;
    std::vector<std::string> _tokens;
    std::vector<float> _scores;
    std::vector<token_attr> _attrs;
    std::unordered_map<std::string, int32_t> _token_to_id;
    std::unordered_map<std::string, int32_t> _merge_rank;  // "left right" -> rank
    std::vector<int32_t> _specials;                        // partition candidates, longest text first
    std::vector<int32_t> _specials_by_byte[256];           // the same, bucketed by the first byte of their text
    std::vector<unicode_regex> _regexes;                   // BPE pre-tokenizer cascade
    std::unordered_set<int32_t> _eog;
    int32_t _byte_ids[256] = {};  // SPM: <0xXX> tokens (-1: none)
    int32_t _bos = -1, _eos = -1, _unk = -1, _pad = -1, _eot = -1, _eom = -1;
    bool _add_bos = false, _add_eos = false, _add_space_prefix = false, _ignore_merges = false;
};

}  // namespace moe
