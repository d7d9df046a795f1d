#!/usr/bin/env python3
"""Tokenizer fixtures: small tokenizers trained locally with Hugging Face `tokenizers`, written into tiny GGUFs the
way llama.cpp's converter writes them, plus HF's encodings of a mixed text set (tests/runtime/tokenizer_test.cpp
compares runtime/tokenizer.cpp against them).

  * byte-level BPE ("gpt2"), one per supported tokenizer.ggml.pre: HF pre-tokenizer = Split(regex, isolated) for
    each regex of llama.cpp's cascade, then ByteLevel(use_regex=False); merges by rank; llama-bpe sets
    ignore_merges like the Llama 3 tokenizer.json.
  * SentencePiece-style BPE ("llama"): a Metaspace-trained vocab, written with byte tokens <0x00>..<0xFF> and
    score = -rank. The HF model reproducing llama.cpp's score-priority merges is a byte_fallback BPE whose merges
    are every (left, right) split of every vocab token whose halves are both tokens, ordered by the token's score
    (how HF converts SentencePiece models), with the Llama normalizer (prepend and replace ' ' by U+2581) and
    decoder (Replace, ByteFallback, Fuse, Strip 1 leading space).

Usage: python3 scripts/make_tokenizer_fixtures.py [--out tests/fixtures/tokenizer]
       python3 scripts/make_tokenizer_fixtures.py --unicode-table   (prints the category runs of runtime/unicode.cpp)
"""
import argparse
import json
import pathlib
import unicodedata

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent

# llama.cpp's pre-tokenizer regexes (docs/model-formats.md §6); HF applies them in sequence too.
PRE_REGEXES = {
    "qwen2": [
        r"""(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ],
    "llama-bpe": [
        r"""(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ],
    "olmo": [r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"""],
    "deepseek-llm": [
        r"[\r\n]",
        r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
        r"\s+$",
        r"[一-龥ࠀ-一가-퟿]+",
        r"\p{N}+",
    ],
    "deepseek-v3": [
        r"\p{N}{1,3}",
        r"[一-龥぀-ゟ゠-ヿ]+",
        r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    ],
    "gpt-4o": [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ],
    "default": [
        r"[\p{P}\$\+<=>\^~\|]+",
        r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)""",
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ],
}

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = "<tool_call>"  # an added, non-special token: matched even when special tokens are not parsed

# Training text: several scripts, code, numbers, whitespace runs.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024 and we're testing tokenizers; they'll do what I'd want.",
    "Hello world! Hello, World? HELLO WORLD... hello_world = 42; print(hello_world)",
    "def main(argc, argv):\n    for i in range(10):\n        print(f\"{i:03d}\")\n    return 0\n",
    "int main(void) {\n\treturn printf(\"%d\\n\", 1234567890);\n}\n",
    "Съешь же ещё этих мягких французских булок, да выпей чаю. Привет, мир!",
    "我能吞下玻璃而不伤身体。你好，世界！今天天气很好。中文分词测试。",
    "私はガラスを食べられます。それは私を傷つけません。こんにちは世界、カタカナとひらがな。",
    "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요. 안녕하세요 세계",
    "أنا قادر على أكل الزجاج و هذا لا يؤلمني. مرحبا بالعالم",
    "Ελληνικά: Μπορώ να φάω σπασμένα γυαλιά χωρίς να πάθω τίποτα. Γειά σου Κόσμε",
    "Emoji: 😀 😃 😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🎉🎉🎉",
    "Numbers: 3.14159 2.71828 1,000,000 123456789012345 0x1F 1e-9 42nd 7th",
    "Spaces:   multiple    spaces\t\ttabs\n\nnewlines\r\n crlf   trailing   ",
    "Café naïve résumé coöperate façade jalapeño Ångström Zürich",
    "I'm sure you've seen that they're here; she'd said he'll come. DON'T SHOUT, IT'S LOUD.",
    "हिन्दी में लिखा गया पाठ। नमस्ते दुनिया",
    "עברית: שלום עולם, אני יכול לאכול זכוכית",
    "Tiếng Việt: Tôi có thể ăn thủy tinh mà không hại gì.",
    "ไทย: ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ",
    "<html><body class=\"main\">a &amp; b &lt; c</body></html> {\"key\": [1, 2, 3], \"nested\": {\"x\": null}}",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC; -- comment",
    "Math: ∀x∈ℝ, x² ≥ 0; ∑ᵢ aᵢ = ∫₀¹ f(t) dt ≈ π/4 ± ε",
]

# Test strings, including edge cases. Every one is valid UTF-8 (HF takes str); invalid bytes are tested in C++.
TEXTS = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "a", "Hello", " Hello", "Hello ", "  Hello  world  ",
    "Hello world", "hello   world", "Hello\tworld", "Hello\nworld", "Hello\n\n\nworld", "line1\r\nline2\r\n",
    "The quick brown fox jumps over the lazy dog.",
    "It's what they're saying: I'll go, you'd stay, we've seen, I'm here, don't.",
    "IT'S LOUD, THEY'RE HERE, I'M", "'s 't 're 've 'm 'll 'd", "rock'n'roll", "'hello'",
    "1", "12", "123", "1234", "12345", "123456789012345678901234567890", "3.14159", "1,000,000", "x=42;y=-7",
    "2024-01-01T12:34:56Z", "version 1.2.3-rc4",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "你好，世界！我能吞下玻璃而不伤身体。", "こんにちは世界、カタカナとひらがな。", "안녕하세요 세계",
    "مرحبا بالعالم", "Γειά σου Κόσμε", "नमस्ते दुनिया", "שלום עולם", "ฉันกินกระจกได้", "Tiếng Việt có dấu",
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "❤️ love", "emoji😀inside", "🎉🎉🎉",
    "e\u0301 cafe\u0301 n\u0303", "Café naïve Ångström", "\u00a0nbsp\u00a0", "zero\u200bwidth", "ﬁ ligature",
    "def f(x):\n    return x * 2\n", "\tif (a && b) { c++; }\n", "    indented\n        more\n",
    "<html><body>a &amp; b</body></html>", "{\"key\": [1, 2, 3]}", "a/b/c\\d", "!!!???...", "--- *** ___",
    "∀x∈ℝ: x² ≥ 0", "Ωmega µ ℃ ㎏",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", "<|endoftext|>", "text<|endoftext|>more",
    "<|im_start|><|im_end|>", "<|im_start", "call <tool_call> now", "<tool_call><|im_end|>",
    "<s>Hello</s>", "<unk> token", " <s> spaced </s> ",
    "MiXeD CaSe WoRdS", "camelCaseIdentifier snake_case_identifier", "UPPERCASE lowercase Titlecase",
    "end with spaces   ", "   start with spaces", "\n\nleading newlines", "trailing newline\n",
]


def unicode_table():
    cats = "Cc Cf Cn Co Cs Ll Lm Lo Lt Lu Mc Me Mn Nd Nl No Pc Pd Pe Pf Pi Po Ps Sc Sk Sm So Zl Zp Zs".split()
    idx = {c: i for i, c in enumerate(cats)}
    runs, prev = [], None
    for cp in range(0x110000):
        c = unicodedata.category(chr(cp))
        if c != prev:
            runs.append((cp, idx[c]))
            prev = c
    lines, line = [], "   "
    for s, c in runs:
        item = f" {{0x{s:X}, {c}}},"
        if len(line) + len(item) > 116:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    print(f"    // generated from Python unicodedata {unicodedata.unidata_version}: {len(runs)} runs")
    print("\n".join(lines))


def write_gguf(path, tokens, types, model, pre=None, scores=None, merges=None, ids=None, flags=None):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tokenizer-fixture")
    w.add_tokenizer_model(model)
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if scores is not None:
        w.add_token_scores(scores)
    if merges is not None:
        w.add_token_merges(merges)
    for key, v in (ids or {}).items():
        getattr(w, f"add_{key}_token_id")(v)
    for key, v in (flags or {}).items():
        getattr(w, f"add_{key}")(v)
    w.add_tensor("dummy.weight", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def record(tok, path_gguf, out_json, meta):
    cases = []
    for text in TEXTS:
        tok.encode_special_tokens = False
        ids = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = True
        plain = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        cases.append({"text": text, "ids": ids, "ids_plain": plain, "decoded": tok.decode(ids, skip_special_tokens=False)})
    doc = dict(meta)
    doc["gguf"] = str(path_gguf.relative_to(ROOT))
    doc["cases"] = cases
    out_json.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def merges_of(tok):
    raw = json.loads(tok.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in raw]


def make_bpe(pre, out, vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(ignore_merges=(pre == "llama-bpe")))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in PRE_REGEXES[pre]]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    tok.add_tokens([AddedToken(USER_DEFINED, special=False, normalized=False)])

    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens)
    types = [3 if t in SPECIALS else 4 if t == USER_DEFINED else 1 for t in tokens]
    name = pre.replace("-", "_")
    gguf_path = out / f"bpe_{name}.gguf"
    ids = {"bos": vocab["<|endoftext|>"], "eos": vocab["<|endoftext|>"], "eot": vocab["<|im_end|>"]}
    write_gguf(gguf_path, tokens, types, "gpt2", pre=pre, merges=merges_of(tok), ids=ids)
    record(tok, gguf_path, out / f"bpe_{name}.cases.json", {"model": "gpt2", "pre": pre})
    return len(tokens)


def make_spm(out, vocab_size):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # 1. a SentencePiece-like vocab: words start with U+2581, merges never cross a word start
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    trainer_tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    trained = sorted(trainer_tok.get_vocab().items(), key=lambda kv: kv[1])

    # 2. the GGUF vocab as llama.cpp's converter writes SentencePiece models: unk, bos, eos, byte tokens, pieces
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    normal = [t for t, _ in trained if t not in tokens]
    for rank, t in enumerate(normal):
        tokens.append(t)
        types.append(1)
        scores.append(-float(rank))
    write_gguf(out / "spm.gguf", tokens, types, "llama", scores=scores, ids={"bos": 1, "eos": 2, "unk": 0},
               flags={"add_bos_token": True, "add_space_prefix": True})

    # 3. the equivalent HF model: every split of every piece into two pieces, ordered by the piece's score
    ids = {t: i for i, t in enumerate(tokens)}
    normal_set = set(normal)
    merges = []
    for t in normal:
        for k in range(1, len(t)):
            if t[:k] in normal_set and t[k:] in normal_set:
                merges.append((t[:k], t[k:]))
    tok = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    record(tok, out / "spm.gguf", out / "spm.cases.json", {"model": "llama", "merges_for_hf": len(merges)})
    return len(tokens)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/tokenizer"))
    ap.add_argument("--unicode-table", action="store_true")
    args = ap.parse_args()
    if args.unicode_table:
        unicode_table()
        return
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for pre in PRE_REGEXES:
        print(f"bpe {pre}: {make_bpe(pre, out, 1200)} tokens")
    print(f"spm: {make_spm(out, 900)} tokens")


if __name__ == "__main__":
    main()
