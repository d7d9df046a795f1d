// Tokenizer from GGUF metadata (see tokenizer.h). Algorithms follow llama.cpp's llama-vocab.cpp; the
// pre-tokenizer regexes are llama.cpp's, run by the regex engine in unicode.cpp.
#include "runtime/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <queue>

#include "common/error.h"

namespace moe {

namespace {

// Pre-tokenizer regex cascades (applied in order, each splitting the pieces of the previous), verbatim from
// llama.cpp's llama-vocab.cpp (docs/model-formats.md §6). Six characters of the
// deepseek-llm letter class are written as \x{...} escapes: they have singleton canonical decompositions (U+1F7D,
// U+1FD3, U+1FDB, U+1FBE, U+2126, U+212A), so any NFC-normalizing copy turns them into other characters (a
// copy that went through NFC shows reversed ranges such as U+1F5F-U+03CE because of that).
// clang-format off
// gpt-2
const std::vector<std::string_view> RE_GPT2 = {
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re",
};
// llama3
const std::vector<std::string_view> RE_LLAMA3 = {
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
};
// qwen2
const std::vector<std::string_view> RE_QWEN2 = {
    R"re((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
};
// deepseek-llm
const std::vector<std::string_view> RE_DEEPSEEK_LLM = {
    R"re([\r\n])re",
    R"re(\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+)re",
    R"re(\s?[!-/:-~！-／：-～‘-‟　-。]+)re",
    R"re(\s+$)re",
    R"re([一-龥ࠀ-一가-퟿]+)re",
    R"re(\p{N}+)re",
};
// deepseek-v3
const std::vector<std::string_view> RE_DEEPSEEK_V3 = {
    R"re(\p{N}{1,3})re",
    R"re([一-龥぀-ゟ゠-ヿ]+)re",
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
};
// gpt-4o
const std::vector<std::string_view> RE_GPT4O = {
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re",
};
// default
const std::vector<std::string_view> RE_DEFAULT = {
    R"re([\p{P}\$\+<=>\^~\|]+)re",
    R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))re",
    R"re(\p{N}+)re",
    R"re([0-9][0-9][0-9])re",
};
// clang-format on

struct pre_def {
    const char* name;
    const std::vector<std::string_view>* regexes;
    bool llama3;  // llama3 family: ignore_merges and add_bos by default
};

const std::vector<pre_def>& pre_defs() {
    static const std::vector<pre_def> defs = {
        {"default", &RE_DEFAULT, false},
        {"gpt-2", &RE_GPT2, false},
        {"gpt2", &RE_GPT2, false},
        {"olmo", &RE_GPT2, false},
        {"mpt", &RE_GPT2, false},
        {"jais", &RE_GPT2, false},
        {"phi-2", &RE_GPT2, false},
        {"roberta-bpe", &RE_GPT2, false},
        {"llama3", &RE_LLAMA3, true},
        {"llama-v3", &RE_LLAMA3, true},
        {"llama-bpe", &RE_LLAMA3, true},
        {"qwen2", &RE_QWEN2, false},
        {"stablelm2", &RE_QWEN2, false},
        {"hunyuan", &RE_QWEN2, false},
        {"deepseek-llm", &RE_DEEPSEEK_LLM, false},
        {"deepseek-v3", &RE_DEEPSEEK_V3, false},
        {"gpt-4o", &RE_GPT4O, false},
    };
    return defs;
}

// Texts llama.cpp also treats as end of generation when they are in the vocab.
constexpr const char* EOG_TEXTS[] = {
    "<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>",           "<|return|>",
    "<|call|>",   "<|end|>",    "<end_of_turn>", "<EOT>",           "<｜end▁of▁sentence｜>"};

// GPT-2 bytes_to_unicode: printable bytes map to themselves, the other 68 to U+0100.. in byte order.
struct byte_map {
    std::string byte_to_utf8[256];
    std::unordered_map<uint32_t, uint8_t> cp_to_byte;
    byte_map() {
        uint32_t next = 0x100;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
            const uint32_t cp = keep ? b : next++;
            byte_to_utf8[b] = utf8_encode(cp);
            cp_to_byte[cp] = static_cast<uint8_t>(b);
        }
    }
};
const byte_map& bytes() {
    static const byte_map m;
    return m;
}

const std::string SPM_SPACE = "\xE2\x96\x81";  // U+2581 '▁'

std::string file_of(const model_file& mf) {
    return mf.paths.empty() ? std::string("<memory>") : mf.paths[0];
}

const meta_array* meta_arr(const model_file& mf, const std::string& key, bool required) {
    const meta_value* v = mf.meta(key);
    if (!v) {
        if (required) fail("{}: {}: required tokenizer metadata is missing", file_of(mf), key);
        return nullptr;
    }
    const auto* a = std::get_if<std::shared_ptr<meta_array>>(&v->value);
    if (!a || !*a) fail("{}: {}: expected an array, found GGUF type {}", file_of(mf), key, v->gguf_type);
    return a->get();
}

std::vector<std::string> meta_strings(const model_file& mf, const std::string& key, bool required) {
    std::vector<std::string> out;
    const meta_array* a = meta_arr(mf, key, required);
    if (!a) return out;
    out.reserve(a->size());
    for (size_t i = 0; i < a->size(); ++i) {
        const auto* s = std::get_if<std::string>(&(*a)[i].value);
        if (!s)
            fail("{}: {}[{}]: expected a string element, found GGUF type {}", file_of(mf), key, i, (*a)[i].gguf_type);
        out.push_back(*s);
    }
    return out;
}

std::vector<double> meta_numbers(const model_file& mf, const std::string& key) {
    std::vector<double> out;
    const meta_array* a = meta_arr(mf, key, false);
    if (!a) return out;
    out.reserve(a->size());
    for (size_t i = 0; i < a->size(); ++i) {
        const auto& v = (*a)[i].value;
        if (auto* d = std::get_if<double>(&v)) {
            out.push_back(*d);
        } else if (auto* s = std::get_if<int64_t>(&v)) {
            out.push_back(static_cast<double>(*s));
        } else if (auto* u = std::get_if<uint64_t>(&v)) {
            out.push_back(static_cast<double>(*u));
        } else {
            fail("{}: {}[{}]: expected a number, found GGUF type {}", file_of(mf), key, i, (*a)[i].gguf_type);
        }
    }
    return out;
}

}  // namespace

std::vector<std::string> tokenizer::supported_pre() {
    std::vector<std::string> out;
    for (const auto& d : pre_defs()) out.emplace_back(d.name);
    return out;
}

tokenizer tokenizer::from_model_file(const model_file& mf) {
    const std::string file = file_of(mf);
    tokenizer t;
    const auto model = mf.meta_string("tokenizer.ggml.model");
    if (!model) fail("{}: tokenizer.ggml.model: required tokenizer metadata is missing", file);
    if (*model == "llama") {
        t._kind = tokenizer_kind::SPM;
    } else if (*model == "gpt2") {
        t._kind = tokenizer_kind::BPE;
    } else {
        fail("{}: tokenizer.ggml.model: expected \"llama\" (SentencePiece) or \"gpt2\" (byte-level BPE), found \"{}\"",
             file, *model);
    }
    const bool spm = t._kind == tokenizer_kind::SPM;

    t._tokens = meta_strings(mf, "tokenizer.ggml.tokens", true);
    const size_t n = t._tokens.size();
    if (n == 0) fail("{}: tokenizer.ggml.tokens: expected at least one token, found an empty array", file);
    if (n > size_t(INT32_MAX)) fail("{}: tokenizer.ggml.tokens: {} tokens do not fit 32-bit ids", file, n);

    const auto scores = meta_numbers(mf, "tokenizer.ggml.scores");
    if (!scores.empty() && scores.size() != n)
        fail("{}: tokenizer.ggml.scores: expected {} entries (one per token), found {}", file, n, scores.size());
    t._scores.assign(n, 0.0f);
    for (size_t i = 0; i < scores.size(); ++i) t._scores[i] = static_cast<float>(scores[i]);

    const auto types = meta_numbers(mf, "tokenizer.ggml.token_type");
    if (!types.empty() && types.size() != n)
        fail("{}: tokenizer.ggml.token_type: expected {} entries (one per token), found {}", file, n, types.size());
    t._attrs.assign(n, token_attr::NORMAL);
    for (size_t i = 0; i < types.size(); ++i) {
        if (types[i] < 0 || types[i] > 6)
            fail("{}: tokenizer.ggml.token_type[{}]: expected 0..6, found {}", file, i, types[i]);
        t._attrs[i] = static_cast<token_attr>(static_cast<int32_t>(types[i]));
    }
    for (size_t i = 0; i < n; ++i) t._token_to_id[t._tokens[i]] = static_cast<int32_t>(i);  // last wins (llama.cpp)

    if (!spm) {
        const auto merges = meta_strings(mf, "tokenizer.ggml.merges", true);
        t._merge_rank.reserve(merges.size());
        for (size_t i = 0; i < merges.size(); ++i) {
            const size_t sp = merges[i].find(' ', 1);
            if (sp == std::string::npos || sp + 1 >= merges[i].size())
                fail("{}: tokenizer.ggml.merges[{}]: expected \"left right\", found \"{}\"", file, i, merges[i]);
            t._merge_rank.emplace(merges[i], static_cast<int32_t>(i));  // first occurrence keeps the lowest rank
        }
        const auto pre = mf.meta_string("tokenizer.ggml.pre");
        t._pre = pre ? *pre : "default";
        if (!pre) {
            warn_once("tokenizer.pre.missing:" + file,
                      fmt::format("{}: tokenizer.ggml.pre is missing: using the \"default\" pre-tokenizer regexes; "
                                  "tokenization may differ from the model's own",
                                  file));
        }
        const pre_def* def = nullptr;
        for (const auto& d : pre_defs()) {
            if (t._pre == d.name) def = &d;
        }
        if (!def) {
            std::string known;
            for (const auto& d : pre_defs()) known += (known.empty() ? "" : ", ") + std::string(d.name);
            fail("{}: tokenizer.ggml.pre: unsupported pre-tokenizer \"{}\" (supported: {})", file, t._pre, known);
        }
        for (const auto& re : *def->regexes) t._regexes.emplace_back(re);
        t._ignore_merges = def->llama3;
        t._add_bos = def->llama3;
    } else {
        t._add_bos = true;
        t._add_space_prefix = true;
    }

    auto read_id = [&](const char* key, int32_t def) {
        const std::string k = std::string("tokenizer.ggml.") + key;
        const auto v = mf.meta_int(k);
        if (!v) return def;
        if (*v < 0 || *v >= int64_t(n)) {
            warn_once("tokenizer.id:" + file + k,
                      fmt::format("{}: {}: id {} is outside the vocab of {} tokens; ignored", file, k, *v, n));
            return def;
        }
        return static_cast<int32_t>(*v);
    };
    auto valid = [&](int32_t id) { return id >= 0 && id < int32_t(n) ? id : -1; };
    t._bos = read_id("bos_token_id", spm ? valid(1) : -1);
    t._eos = read_id("eos_token_id", spm ? valid(2) : -1);
    t._unk = read_id("unknown_token_id", spm ? valid(0) : -1);
    t._pad = read_id("padding_token_id", -1);
    t._eot = read_id("eot_token_id", -1);
    t._eom = read_id("eom_token_id", -1);
    if (auto v = mf.meta_bool("tokenizer.ggml.add_bos_token")) t._add_bos = *v;
    if (auto v = mf.meta_bool("tokenizer.ggml.add_eos_token")) t._add_eos = *v;
    if (auto v = mf.meta_bool("tokenizer.ggml.add_space_prefix")) t._add_space_prefix = *v;
    if (t._add_bos && t._bos < 0) fail("{}: tokenizer.ggml.add_bos_token is true but the model has no BOS token", file);
    if (t._add_eos && t._eos < 0) fail("{}: tokenizer.ggml.add_eos_token is true but the model has no EOS token", file);

    for (int32_t id : {t._eos, t._eot, t._eom}) {
        if (id >= 0) t._eog.insert(id);
    }
    for (const char* s : EOG_TEXTS) {
        const int32_t id = t.find(s);
        if (id >= 0 &&
            (t._attrs[size_t(id)] == token_attr::CONTROL || t._attrs[size_t(id)] == token_attr::USER_DEFINED))
            t._eog.insert(id);
    }

    for (size_t i = 0; i < n; ++i) {
        const token_attr a = t._attrs[i];
        if ((a == token_attr::CONTROL || a == token_attr::USER_DEFINED || a == token_attr::UNKNOWN) &&
            !t._tokens[i].empty())
            t._specials.push_back(static_cast<int32_t>(i));
    }
    std::stable_sort(t._specials.begin(), t._specials.end(),
                     [&](int32_t a, int32_t b) { return t._tokens[size_t(a)].size() > t._tokens[size_t(b)].size(); });
    for (int32_t id : t._specials) t._specials_by_byte[static_cast<uint8_t>(t._tokens[size_t(id)][0])].push_back(id);

    for (int b = 0; b < 256; ++b) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "<0x%02X>", b);
        const int32_t id = t.find(hex);
        t._byte_ids[b] = id >= 0 && t._attrs[size_t(id)] == token_attr::BYTE ? id : -1;
    }
    return t;
}

int32_t tokenizer::find(std::string_view text) const {
    auto it = _token_to_id.find(std::string(text));
    return it == _token_to_id.end() ? -1 : it->second;
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
    std::vector<int32_t> out;
    if (add_special && _add_bos) out.push_back(_bos);

    // Special-token partition: leftmost, then longest match (HF's added-token matcher; llama.cpp instead takes
    // the longest token first over the whole text, which differs only when special texts overlap). Raw stretches
    // between matches are tokenized on their own.
    bool prev_special = true;  // SPM: the first raw fragment and any after a special token get the space prefix
    auto raw = [&](std::string_view frag) {
        if (frag.empty()) return;
        if (_kind == tokenizer_kind::SPM) {
            encode_spm(frag, _add_space_prefix && prev_special, out);
        } else {
            encode_bpe(frag, out);
        }
        prev_special = false;
    };
    size_t start = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        int32_t hit = -1;
        // candidates starting with this byte, longest first: the first hit is the longest at this position
        for (int32_t id : _specials_by_byte[static_cast<uint8_t>(text[pos])]) {
            const std::string& s = _tokens[size_t(id)];
            if (!parse_special && _attrs[size_t(id)] != token_attr::USER_DEFINED) continue;
            if (s.size() <= text.size() - pos && text.compare(pos, s.size(), s) == 0) {
                hit = id;
                break;
            }
        }
        if (hit < 0) {
            ++pos;
            continue;
        }
        raw(text.substr(start, pos - start));
        out.push_back(hit);
        prev_special = true;
        pos += _tokens[size_t(hit)].size();
        start = pos;
    }
    raw(text.substr(start));

    if (add_special && _add_eos) out.push_back(_eos);
    return out;
}

int32_t tokenizer::byte_token(uint8_t byte) const {
    if (_byte_ids[byte] >= 0) return _byte_ids[byte];
    const int32_t id = find(std::string(1, static_cast<char>(byte)));
    if (id >= 0) return id;
    if (_unk >= 0) return _unk;
    fail("tokenizer: byte 0x{:02X} has no <0x{:02X}> token, no single-byte token and the model has no unknown token",
         byte, byte);
}

void tokenizer::encode_spm(std::string_view frag, bool prefix_space, std::vector<int32_t>& out) const {
    std::string text;
    text.reserve(frag.size() * 3 + 3);
    if (prefix_space) text += SPM_SPACE;
    for (char c : frag) {
        if (c == ' ') {
            text += SPM_SPACE;
        } else {
            text += c;
        }
    }

    struct symbol {
        int prev, next;
        size_t offset, len;
    };
    std::vector<symbol> sym;
    for (const auto& ch : utf8_decode(text)) {
        const int i = static_cast<int>(sym.size());
        sym.push_back({i - 1, i + 1, ch.offset, ch.length});
    }
    if (sym.empty()) return;
    sym.back().next = -1;

    struct bigram {
        int left, right;
        float score;
        size_t len;
    };
    // highest score first; on equal scores the leftmost pair (llama.cpp llm_bigram_spm::comparator)
    auto worse = [](const bigram& a, const bigram& b) {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<bigram, std::vector<bigram>, decltype(worse)> queue(worse);
    auto try_add = [&](int left, int right) {
        if (left < 0 || right < 0) return;
        const size_t len = sym[size_t(left)].len + sym[size_t(right)].len;
        const int32_t id = find(std::string_view(text).substr(sym[size_t(left)].offset, len));
        if (id < 0) return;
        queue.push({left, right, _scores[size_t(id)], len});
    };
    for (size_t i = 1; i < sym.size(); ++i) try_add(int(i) - 1, int(i));
    while (!queue.empty()) {
        const bigram b = queue.top();
        queue.pop();
        symbol& l = sym[size_t(b.left)];
        symbol& r = sym[size_t(b.right)];
        if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;  // stale: a side was merged since
        l.len += r.len;
        r.len = 0;
        l.next = r.next;
        if (r.next >= 0) sym[size_t(r.next)].prev = b.left;
        try_add(l.prev, b.left);
        try_add(b.left, l.next);
    }
    for (int i = 0; i >= 0; i = sym[size_t(i)].next) {
        const auto piece = std::string_view(text).substr(sym[size_t(i)].offset, sym[size_t(i)].len);
        const int32_t id = find(piece);
        if (id >= 0) {
            out.push_back(id);
            continue;
        }
        // merged symbols are always tokens, so this is a single character outside the vocab: its bytes
        for (char c : piece) out.push_back(byte_token(static_cast<uint8_t>(c)));
    }
}

void tokenizer::encode_bpe(std::string_view frag, std::vector<int32_t>& out) const {
    const auto chars = utf8_decode(frag);
    std::vector<std::pair<size_t, size_t>> pieces{{0, chars.size()}};
    std::vector<std::pair<size_t, size_t>> next;
    for (const auto& re : _regexes) {
        next.clear();
        for (const auto& [b, e] : pieces) re.split(chars, b, e, next);
        pieces.swap(next);
    }
    const auto& bm = bytes();
    std::string word;
    for (const auto& [b, e] : pieces) {
        if (b == e) continue;
        word.clear();
        const size_t off = chars[b].offset;
        const size_t end = chars[e - 1].offset + chars[e - 1].length;
        for (size_t i = off; i < end; ++i) word += bm.byte_to_utf8[static_cast<uint8_t>(frag[i])];
        bpe_word(word, out);
    }
}

void tokenizer::bpe_word(const std::string& word, std::vector<int32_t>& out) const {
    if (_ignore_merges) {
        const int32_t id = find(word);
        if (id >= 0) {
            out.push_back(id);
            return;
        }
    }
    // Merge the lowest-rank adjacent pair, leftmost on ties, until no adjacent pair is a merge (HF BPE and
    // llama.cpp agree on this order). Symbols form a linked list over `word`; queue entries whose sides changed
    // since they were pushed are skipped, so a long piece (a page of spaces) costs O(n log n), not O(n^2).
    struct symbol {
        int prev, next;
        size_t offset, len;
    };
    std::vector<symbol> sym;
    for (const auto& ch : utf8_decode(word)) {
        const int i = static_cast<int>(sym.size());
        sym.push_back({i - 1, i + 1, ch.offset, ch.length});
    }
    if (sym.empty()) return;
    sym.back().next = -1;
    struct pair_entry {
        int32_t rank;
        int left, right;
        size_t len;
    };
    auto later = [](const pair_entry& a, const pair_entry& b) {
        return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    };
    std::priority_queue<pair_entry, std::vector<pair_entry>, decltype(later)> queue(later);
    std::string key;
    auto try_add = [&](int left, int right) {
        if (left < 0 || right < 0) return;
        const symbol& l = sym[size_t(left)];
        const symbol& r = sym[size_t(right)];
        key.assign(word, l.offset, l.len);
        key += ' ';
        key.append(word, r.offset, r.len);
        auto it = _merge_rank.find(key);
        if (it != _merge_rank.end()) queue.push({it->second, left, right, l.len + r.len});
    };
    for (size_t i = 1; i < sym.size(); ++i) try_add(int(i) - 1, int(i));
    while (!queue.empty()) {
        const pair_entry p = queue.top();
        queue.pop();
        symbol& l = sym[size_t(p.left)];
        symbol& r = sym[size_t(p.right)];
        if (l.len == 0 || r.len == 0 || l.next != p.right || l.len + r.len != p.len) continue;  // stale
        l.len += r.len;
        r.len = 0;
        l.next = r.next;
        if (r.next >= 0) sym[size_t(r.next)].prev = p.left;
        try_add(l.prev, p.left);
        try_add(p.left, l.next);
    }
    for (int i = 0; i >= 0; i = sym[size_t(i)].next) {
        const std::string s = word.substr(sym[size_t(i)].offset, sym[size_t(i)].len);
        const int32_t id = find(s);
        if (id >= 0) {
            out.push_back(id);
            continue;
        }
        // a symbol outside the vocab (a vocab without the full byte alphabet): one token per byte-level character
        for (const auto& ch : utf8_decode(s)) {
            const int32_t cid = find(s.substr(ch.offset, ch.length));
            if (cid >= 0) {
                out.push_back(cid);
            } else if (_unk >= 0) {
                out.push_back(_unk);
            } else {
                fail("tokenizer: byte-level symbol \"{}\" is not in the vocab and the model has no unknown token",
                     s.substr(ch.offset, ch.length));
            }
        }
    }
}

std::string tokenizer::token_to_piece(int32_t id, bool special) const {
    if (id < 0 || id >= n_vocab()) fail("tokenizer: token id {} is outside the vocab of {} tokens", id, n_vocab());
    const std::string& s = _tokens[size_t(id)];
    switch (_attrs[size_t(id)]) {
        case token_attr::CONTROL:
        case token_attr::UNKNOWN:
            return special ? s : std::string();
        case token_attr::USER_DEFINED:
            return s;
        case token_attr::UNUSED:
            return {};
        case token_attr::BYTE:
            if (_kind == tokenizer_kind::SPM && s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>') {
                return std::string(1, static_cast<char>(std::stoi(s.substr(3, 2), nullptr, 16)));
            }
            break;
        default:
            break;
    }
    if (_kind == tokenizer_kind::SPM) {
        std::string r;
        for (size_t i = 0; i < s.size();) {
            if (s.compare(i, 3, SPM_SPACE) == 0) {
                r += ' ';
                i += 3;
            } else {
                r += s[i++];
            }
        }
        return r;
    }
    // byte-level: every code point maps back to one byte; a code point outside the table is kept as UTF-8
    const auto& bm = bytes();
    std::string r;
    for (const auto& ch : utf8_decode(s)) {
        auto it = bm.cp_to_byte.find(ch.cp);
        if (it != bm.cp_to_byte.end()) {
            r += static_cast<char>(it->second);
        } else {
            r += s.substr(ch.offset, ch.length);
        }
    }
    return r;
}

std::string tokenizer::decode(const std::vector<int32_t>& ids, bool special) const {
    std::string out;
    size_t begin = 0;
    size_t end = ids.size();
    if (!special) {  // llama.cpp remove_special: the BOS/EOS that encode(add_special) added are dropped first
        if (_add_bos && begin < end && ids[begin] == _bos) ++begin;
        if (_add_eos && begin < end && ids[end - 1] == _eos) --end;
    }
    bool strip = _kind == tokenizer_kind::SPM && _add_space_prefix;  // llama.cpp: lstrip the first piece only
    for (size_t i = begin; i < end; ++i) {
        std::string piece = token_to_piece(ids[i], special);
        if (strip && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
        strip = false;
        out += piece;
    }
    return out;
}

}  // namespace moe
