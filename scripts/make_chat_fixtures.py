#!/usr/bin/env python3
"""Chat-template fixtures for `moe run --chat` (tests/runtime/chat_template_test.cpp).

moe does not interpret Jinja: runtime/chat_template.cpp recognises the templates of the supported models and
renders one user turn plus the assistant prefix itself. The independent reference is transformers'
`render_jinja_template` (the renderer behind `apply_chat_template`, with its Jinja settings) run on each
template below, with add_generation_prompt=True. Where a tokenizer fixture fits (tests/fixtures/tokenizer),
the rendered text is also encoded by a Hugging Face `tokenizers` model rebuilt from that GGUF's vocabulary
(add_special_tokens=False, special tokens matched: what apply_chat_template(tokenize=True) does), so the test
checks the token ids moe feeds the model too.

The templates are written out here in the form the models publish in tokenizer_config.json (the short ones in
full; Qwen3 and gpt-oss reduced to the branches a single user turn reaches, which is all moe renders). Both
spellings of a newline inside a Jinja string (an escaped backslash-n, and a raw newline) are covered.

For the end-to-end tests of `moe run --chat` (tests/runtime/tests_run_flags.cmake) it also records the prompt
text transformers renders for fixture models (with the template of their architecture, or the one written into
a copy of the tiny Mixtral), and writes those copies: one with a ChatML template, one with a template moe does
not know (Llama 3's), which must be refused.

Usage: python3 scripts/make_chat_fixtures.py [--out tests/fixtures/chat]
"""
import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

MIXTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

# The 2024 revision of Mixtral-8x7B-Instruct-v0.1's template: optional system message, a space before [INST].
MIXTRAL_V01_SYSTEM = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

# Mixtral-8x22B-Instruct / Mistral v0.3 style: [INST] and [/INST] are control tokens, no space before [/INST].
MISTRAL_V3 = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# Qwen2-57B-A14B-Instruct (and Qwen2 generally): ChatML with a default system turn; raw newlines in strings.
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen1.5-MoE-A2.7B-Chat: the same with escaped newlines and another default system text.
QWEN15 = QWEN2.replace("\n", "\\n").replace("You are a helpful assistant.", "You are a helpful assistant")

# Qwen3-30B-A3B: ChatML, no default system turn; enable_thinking=false would add an empty think block.
QWEN3 = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

# OLMoE-1B-7B-0924-Instruct: Tulu format, starting with the EOS token.
OLMOE = (
    "{{ eos_token }}{% for message in messages %}\n{% if message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] }}\n{% elif message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)

# DeepSeek-V2(-Lite)-Chat.
DEEPSEEK_V2 = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'User: ' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# gpt-oss (harmony): the user/assistant turns and the generation prompt of its template. moe does not render the
# system block the full template adds (model identity, knowledge cutoff, today's date, reasoning effort).
GPT_OSS = """{#- harmony turns (gpt-oss) #}
{%- for message in messages %}
    {%- if message.role == 'user' %}
        {{- "<|start|>user<|message|>" + message.content + "<|end|>" }}
    {%- elif message.role == 'assistant' %}
        {{- "<|start|>assistant<|channel|>final<|message|>" + message.content + "<|end|>" }}
    {%- endif %}
{%- endfor %}
{#- Generation prompt #}
{%- if add_generation_prompt -%}
<|start|>assistant
{%- endif -%}"""

USERS = ["Hello world", "What is 2+2?\nAnswer briefly.", "  spaced  and unicode: café 你好 "]

# Llama 3's template: a format moe does not render (no supported model uses it), for the refusal test.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# (name, template, style moe must report, tokenizer fixture or None)
CASES = [
    ("mixtral-v0.1", MIXTRAL_V01, "mistral", "spm.gguf"),
    ("mixtral-v0.1-system", MIXTRAL_V01_SYSTEM, "mistral", "spm.gguf"),
    ("mistral-v3", MISTRAL_V3, "mistral", "spm.gguf"),
    ("qwen2", QWEN2, "chatml", "bpe_qwen2.gguf"),
    ("qwen1.5", QWEN15, "chatml", "bpe_qwen2.gguf"),
    ("qwen3", QWEN3, "chatml", "bpe_qwen2.gguf"),
    ("olmoe", OLMOE, "tulu", "bpe_olmo.gguf"),
    ("deepseek-v2", DEEPSEEK_V2, "deepseek", "bpe_deepseek_llm.gguf"),
    ("gpt-oss", GPT_OSS, "harmony", "bpe_gpt_4o.gguf"),
]


def gguf_vocab(path):
    import gguf

    r = gguf.GGUFReader(str(path))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def numbers(key):
        f = r.fields[key]
        return [f.parts[i].tolist()[0] for i in f.data]

    def scalar(key):
        f = r.fields.get(key)
        return None if f is None else f.parts[-1].tolist()[0]

    v = {"tokens": strings("tokenizer.ggml.tokens"), "types": numbers("tokenizer.ggml.token_type"),
         "model": bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode()}
    if "tokenizer.ggml.pre" in r.fields:
        v["pre"] = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    if "tokenizer.ggml.scores" in r.fields:
        v["scores"] = numbers("tokenizer.ggml.scores")
    if "tokenizer.ggml.merges" in r.fields:
        v["merges"] = strings("tokenizer.ggml.merges")
    v["bos"] = scalar("tokenizer.ggml.bos_token_id")
    v["eos"] = scalar("tokenizer.ggml.eos_token_id")
    return v


def hf_tokenizer(v):
    """A Hugging Face tokenizer equivalent to the GGUF's, built the way make_tokenizer_fixtures.py builds it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    from make_tokenizer_fixtures import PRE_REGEXES

    tokens, types = v["tokens"], v["types"]
    ids = {t: i for i, t in enumerate(tokens)}
    if v["model"] == "gpt2":
        merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
        tok = Tokenizer(models.BPE(vocab=ids, merges=merges, ignore_merges=(v["pre"] == "llama-bpe")))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in PRE_REGEXES[v["pre"]]]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
    else:  # SentencePiece-style: every split of a piece into two pieces, in the piece's score order
        normal = [t for _, t, ty in sorted(zip([-s for s in v["scores"]], tokens, types), key=lambda x: x[0])
                  if ty == 1]
        normal_set = set(normal)
        merges = [(t[:k], t[k:]) for t in normal for k in range(1, len(t))
                  if t[:k] in normal_set and t[k:] in normal_set]
        tok = Tokenizer(models.BPE(vocab=ids, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty in (2, 3)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == 4])
    return tok


def render(template, user, bos, eos):
    from transformers.utils.chat_template_utils import render_jinja_template

    text = render_jinja_template([[{"role": "user", "content": user}]], chat_template=template,
                                 add_generation_prompt=True, bos_token=bos, eos_token=eos)
    while not isinstance(text, str):  # (rendered, generation indices) / one entry per conversation
        text = text[0]
    return text


def special_texts(v):
    return (v["tokens"][v["bos"]] if v["bos"] is not None else "", v["tokens"][v["eos"]] if v["eos"] is not None else "")


def copy_with_template(src, dst, template):
    """A copy of a GGUF with tokenizer.chat_template set (every other key and tensor as they are)."""
    import gguf

    r = gguf.GGUFReader(str(src))
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = gguf.GGUFWriter(str(dst), arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vtype, sub)
    w.add_chat_template(template)
    for t in r.tensors:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in r.tensors:
        w.write_tensor_data(t.data)
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/chat"))
    args = ap.parse_args()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = ROOT / "tests/fixtures/tokenizer"

    cases = []
    for name, template, style, tok_file in CASES:
        v = gguf_vocab(tok_dir / tok_file)
        tok = hf_tokenizer(v)
        bos, eos = special_texts(v)
        renders = []
        for user in USERS:
            text = render(template, user, bos, eos)
            renders.append({"user": user, "text": text, "ids": tok.encode(text, add_special_tokens=False).ids})
        cases.append({"name": name, "style": style, "template": template,
                      "tokenizer": f"tests/fixtures/tokenizer/{tok_file}", "bos_token": bos, "eos_token": eos,
                      "renders": renders})
        print(f"{name:22s} {style:9s} {renders[0]['text']!r}")

    # Fixture models for `moe run --chat`: the template moe must pick (the architecture's, or the file's own).
    fx = ROOT / "tests/fixtures"
    copy_with_template(fx / "mixtral-tiny-q4_0.gguf", out_dir / "mixtral-tiny-q4_0-chatml.gguf", QWEN2)
    copy_with_template(fx / "mixtral-tiny-q4_0.gguf", out_dir / "mixtral-tiny-q4_0-llama3.gguf", LLAMA3)
    models = []
    # The prompt text only: the fixture models' synthetic vocabularies are not ones HF tokenizers can rebuild (SPM
    # merges through characters that are not tokens). Token ids are checked through the tokenizer fixtures above.
    # (The BPE fixture models lack a byte symbol for '\n', so only the SPM ones can take a chat prompt.)
    for model, template in [(fx / "mixtral-tiny-f32.gguf", MIXTRAL_V01), (out_dir / "mixtral-tiny-q4_0-chatml.gguf", QWEN2)]:
        v = gguf_vocab(model)
        bos, eos = special_texts(v)
        text = render(template, "Hello world", bos, eos)
        models.append({"model": str(model.relative_to(ROOT)), "user": "Hello world", "text": text})
        print(f"{model.name:32s} {text!r}")

    doc = {"made_by": "scripts/make_chat_fixtures.py (transformers render_jinja_template + HF tokenizers)",
           "cases": cases, "models": models}
    (out_dir / "templates.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
