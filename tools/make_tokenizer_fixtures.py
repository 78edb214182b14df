#!/usr/bin/env python3
"""Tokenizer parity fixtures for crates/icl-probe/tests/tokenizer_gguf.rs.

The reference is transformers' tokenizer built from a GGUF file's metadata,
`AutoTokenizer.from_pretrained(folder, gguf_file=NAME)` (env: transformers 5.24, tokenizers 0.23,
gguf 0.19), i.e. what every real-model test in icl-probe compares against.

Writes to crates/icl-probe/tests/fixtures/tokenizers/:

- `<name>.tokenizer.gguf.gz` for qwen2.5-coder (0.5B file) and gemma-3 (270M file): the GGUF with
  every metadata key/value pair copied byte for byte and zero tensors, gzipped. It carries the whole
  tokenizer (vocabulary, merges, scores, token types, special ids and flags), so CI can prove parity
  without the large model files. Before it is written, transformers' tokenizer built from it is
  checked to give the same ids as the one built from the real file on every string below.
- `parity.json.gz`: the strings (about 1,300: unicode scripts, emoji, accents composed and
  decomposed, RTL, digits and long numbers, whitespace runs, tabs, newlines, code, mixed case and
  contractions, special and added tokens inside text, random mixtures, the 100 real ICL prompts of
  fixtures/real_models/prompts.json and variants of them), and per model transformers' ids for each
  (`tok(text)["input_ids"]`, i.e. with the BOS/EOS the file asks for).

Models come from the asset cache (`target/release/assets path NAME`; fetch them first with
`target/release/assets fetch NAME`). SmolLM2 is included when cached. When the 1.5B Qwen file is
cached its `tokenizer.ggml.*` metadata is compared key by key (bytes) with the 0.5B file's, and
the result recorded (the test then also checks its tokenizer against the 0.5B ids).

Usage (repository root):
    /work/venv/bin/python tools/make_tokenizer_fixtures.py
"""

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata

import numpy as np
import tokenizers
import transformers
from gguf import GGUFReader
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/icl-probe/tests/fixtures/tokenizers")
PROMPTS = os.path.join(ROOT, "crates/icl-probe/tests/fixtures/real_models/prompts.json")
ASSETS = os.path.join(ROOT, "target/release/assets")

# asset -> name of its metadata-only fixture (None: ids only, no GGUF fixture).
MODELS = {
    "qwen2.5-coder-0.5b-q4km": "qwen2.5-coder",
    "gemma-3-270m-q4km": "gemma-3",
    "smollm2-135m-gguf": None,
}
SAME_VOCAB = ("qwen2.5-coder-1.5b-q4km", "qwen2.5-coder-0.5b-q4km")


def asset_path(name):
    r = subprocess.run([ASSETS, "path", name], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


# ---------------------------------------------------------------------------------------------
# Strings


SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|vision_start|>",
    "<tool_call>", "</tool_call>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>",
    "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<unused0>",
    "<unused17>", "[multimodal]", "<table>", "</td>", "<h1>", "<code>", "</code>", "<s>", "</s>",
    "<0x41>", "<0x0A>", "[PAD151665]", "<think>", "</think>",
    # near misses, which must not match
    "<|im_start", "<|im_start|", "<im_start>", "<|IM_START|>", "<start_of_turn", "<<bos>>",
    "<bos", "bos>", "<|endoftext|", "< bos>",
]

WORDS = [
    "the", "The", "THE", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Paris", "France",
    "Tokyo", "capital", "country", "apple", "banana", "cherry", "Hello", "world", "HTTPServer",
    "getElementById", "snake_case_name", "camelCaseName", "ALLCAPS", "iPhone", "McDonald", "x", "I",
    "naïve", "café", "résumé", "Straße", "Zürich", "São", "Ελλάδα", "Москва", "日本", "北京", "서울",
    "مرحبا", "שלום", "नमस्ते", "ไทย", "😀", "🇫🇷", "👍🏽", "e\u0301", "n\u0303o", "über", "ÜBER",
]

CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'LL", "'D",
                "'ſ", "'x", "’s", "''", "'"]

SCRIPTS = {
    "cjk": "我们今天去北京的天安门广场看升旗仪式然后吃烤鸭。中华人民共和国成立于一九四九年。",
    "japanese": "私は東京に住んでいます。カタカナとひらがなを混ぜて書きます。ｶﾀｶﾅ（半角）も。",
    "korean": "대한민국의 수도는 서울입니다. 한글은 세종대왕이 만들었습니다.",
    "arabic": "اللغة العربية هي لغة رسمية في أكثر من عشرين دولة. عاصمة مصر هي القاهرة ١٢٣٤٥٦٧٨٩٠.",
    "hebrew": "עברית נכתבת מימין לשמאל. ירושלים היא עיר הבירה.",
    "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Αθήνα είναι η πρωτεύουσα.",
    "hindi": "भारत की राजधानी नई दिल्ली है। हिन्दी देवनागरी लिपि में लिखी जाती है।",
    "thai": "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ กรุงเทพมหานคร",
    "emoji": "😀😃😄 👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏿 thumbs, 1️⃣ keycap, 🇯🇵🇺🇸 flags, ❤️ heart",
    "accents": "Ça va? À bientôt! Ñandú, façade, coöperate, Ångström, Dvořák, Łódź, İstanbul",
    "decomposed": "Ça va? A\u0300 bientôt! N\u0303andu\u0301, Å (A\u030a), Dvor\u030ca\u0301k, \u1100\u1161\u11a8",
    "math": "∀x∈ℝ: x² ≥ 0 ⇒ √(x²) = |x|; ∑ᵢ aᵢ ≤ ∞, ½ + ¼ = ¾, ℃ ℉ №",
    "mixed_rtl": "The word שלום means peace; in Arabic it is سلام (salaam), 2024-05-01.",
    "fullwidth": "ＡＢＣ１２３！？　全角スペース",
    "rare": "𠀀𠀁𪚥 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 ꙮ \ue000\ue001 \U000f0000 ☃ ⚡",
    "invisible": "zero\u200bwidth\u200cjoin\u200dx\ufeffbom\u00a0nbsp\u2028ls\u2029ps\u00adshy",
    "controls": "a\x00b\x01c\x07d\x1be\x7ff\x85g\x1c\x1fh\x0bi\x0cj",
}

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "const f = async (url) => { const r = await fetch(url); return r.json(); };",
    '{"name": "test", "values": [1, 2.5, -3e10, null, true], "nested": {"k": "v"}}',
    "<html>\n  <body>\n    <div class=\"x\"><table><tr><td>1</td></tr></table></div>\n  </body>\n</html>",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;",
    "#!/bin/bash\nset -euo pipefail\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}'\ndone\n",
    "import numpy as np\n\nx = np.linspace(0, 1, 100)\ny = np.sin(2 * np.pi * x)  # comment\n",
    "class Foo(Bar):\n\t\"\"\"Docstring.\"\"\"\n\n\tdef __init__(self, *args, **kwargs):\n\t\tsuper().__init__(*args, **kwargs)\n",
    "if (a != b && c <= d || !e) { x->y = z[0]; } else if (p >>= 2) {}",
    "    \n        \n\t\t\n",
    "x=1;y=2;;z=x+y//3%4**5",
    "// TODO: fix this\n/* block\n * comment */\n",
    "    return self.__dict__['_cache'].get(key, None)  # type: ignore[attr-defined]",
]


def gen_strings(seed=1234):
    rng = random.Random(seed)
    out = []

    def add(cat, s):
        out.append((cat, s))

    # Fixed pieces.
    for k, v in SCRIPTS.items():
        add("unicode", v)
        add("unicode", v.upper())
        add("unicode", " " + v)
    for c in CODE:
        add("code", c)
    for w in WORDS:
        add("words", w)
        add("words", " " + w)
    for c in CONTRACTIONS:
        add("case", "it" + c + " fine")
        add("case", "IT" + c.upper() + " FINE")
    for s in ["", " ", "  ", "\n", "\t", "\r\n", "a", "A", "0", "▁", "▁▁hi", " ▁ x"]:
        add("edge", s)

    # Unicode: random letters from many blocks, assigned characters only.
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF),
              (0x600, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1EFF),
              (0x2000, 0x206F), (0x2190, 0x23FF), (0x2500, 0x27BF), (0x3000, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF),
              (0x20000, 0x2A6DF), (0x0300, 0x036F)]

    def rand_char():
        while True:
            lo, hi = rng.choice(blocks)
            c = chr(rng.randint(lo, hi))
            if unicodedata.category(c) not in ("Cn", "Cs"):
                return c

    for _ in range(200):
        n = rng.randint(1, 40)
        s = "".join(rand_char() if rng.random() < 0.8 else rng.choice(" \n\t") for _ in range(n))
        add("unicode", s)
    for _ in range(60):
        parts = [rng.choice(list(SCRIPTS.values()))[rng.randint(0, 10):][:rng.randint(3, 30)]
                 for _ in range(rng.randint(2, 4))]
        add("unicode", rng.choice([" ", "", "\n", " - "]).join(parts))
    for _ in range(40):
        base = rng.choice(WORDS)
        add("unicode", unicodedata.normalize(rng.choice(["NFD", "NFC", "NFKD", "NFKC"]), base + " " +
                                             rng.choice(SCRIPTS["accents"].split())))

    # Digits and numbers.
    for _ in range(160):
        kind = rng.randrange(10)
        if kind == 0:
            s = str(rng.randint(0, 10 ** rng.randint(1, 40)))
        elif kind == 1:
            s = f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
        elif kind == 2:
            s = f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        elif kind == 3:
            s = f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
        elif kind == 4:
            s = hex(rng.getrandbits(rng.randint(4, 128)))
        elif kind == 5:
            s = "abc" + str(rng.randint(0, 99999)) + "def" + str(rng.randint(0, 999))
        elif kind == 6:
            s = ",".join(str(rng.randint(0, 999)) for _ in range(rng.randint(2, 6)))
        elif kind == 7:
            s = "".join(rng.choice("٠١٢٣٤٥٦٧٨٩０１２３４５６７８９²³¹¼½⅓०१२३") for _ in range(rng.randint(1, 12)))
        elif kind == 8:
            s = f"{rng.randint(1, 9)}.{rng.randint(0, 999)}e{rng.choice('+-')}{rng.randint(0, 308)}"
        else:
            s = " ".join(str(rng.randint(0, 10 ** 6)) for _ in range(rng.randint(2, 8)))
        add("digits", s)

    # Whitespace runs.
    for _ in range(160):
        pieces = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.45:
                pieces.append(rng.choice(" \t\n\r\u3000\u00a0\x0b\x0c") * rng.randint(1, 40))
            elif r < 0.6:
                pieces.append("".join(rng.choice(" \t\n") for _ in range(rng.randint(1, 12))))
            else:
                pieces.append(rng.choice(WORDS))
        add("whitespace", "".join(pieces))
    for k in (1, 2, 3, 8, 16, 17, 30, 31, 32, 33, 40, 64):
        add("whitespace", "a" + " " * k + "b")
        add("whitespace", "a" + "\n" * k + "b")
        add("whitespace", "a" + "\t" * k + "b")
        add("whitespace", " " * k)

    # Code, generated.
    idents = ["x", "foo", "bar_baz", "MyClass", "self", "i", "n", "data", "value2", "__init__"]
    ops = [" = ", " == ", " += ", "->", "=>", "::", ".", ", ", "(", ")", "[", "]", "{", "}", ";", ":",
           " && ", " || ", "!", "<=", ">=", "<<", ">>", "%", "**", "//", "#", "@", "$", "\\"]
    for _ in range(140):
        lines = []
        for _ in range(rng.randint(1, 6)):
            indent = rng.choice(["", "    ", "        ", "\t", "\t\t", "  "])
            toks = [rng.choice(idents) if rng.random() < 0.5 else rng.choice(ops)
                    for _ in range(rng.randint(2, 12))]
            if rng.random() < 0.3:
                toks.append(str(rng.randint(0, 100000)))
            if rng.random() < 0.2:
                toks.append(' "str\\n ing" ')
            lines.append(indent + "".join(toks))
        add("code", "\n".join(lines) + rng.choice(["", "\n", "\n\n"]))

    # Mixed case.
    for _ in range(100):
        ws = [rng.choice(WORDS[:30]) for _ in range(rng.randint(1, 8))]
        ws = ["".join(c.upper() if rng.random() < 0.5 else c.lower() for c in w) for w in ws]
        s = " ".join(ws)
        if rng.random() < 0.5:
            s += rng.choice(CONTRACTIONS) + " " + rng.choice(WORDS)
        add("case", s)

    # Special and added tokens inside text.
    for _ in range(160):
        parts = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.5:
                parts.append(rng.choice(SPECIALS))
            else:
                parts.append(rng.choice(WORDS + ["\n", " ", "user", "assistant", "\n\n", "  "]))
        add("special", rng.choice(["", " "]).join(parts))
    add("special", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    add("special", "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n")
    add("special", "<bos><bos><eos> <pad>\n<unk>")

    # Single code points at the edges of the split regexes' classes (\s, \p{L}, \p{N}, marks,
    # case folding) and letters added in recent Unicode versions, each in a few contexts.
    edge_chars = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e\u2000\u2005\u200a\u200b"
                  "\u200c\u200d\u2028\u2029\u202f\u205f\u3000\ufeff\u0301\u0903\u20dd\u2160"
                  "\u216b\u3007\xbd\xb2\u2460\u02b0\xaa\u017f\u212a\u0130\xdf\u1e9e\u0345"
                  "\U0001e4d0\U00011f00\U00031350\U0002ebf0\U00010d40\U000105c0\U0001cc00\U0001fae8")
    for c in edge_chars:
        for form in ("a{c}b", "{c}{c}", " {c}1", "x{c}\n", "'{c}", "1{c}2", "{c}"):
            add("codepoints", form.format(c=c))

    # Random mixtures of everything.
    pool = (list(SCRIPTS.values()) + CODE + [" ".join(WORDS)] + SPECIALS)
    for _ in range(100):
        s = "".join(rng.choice(pool)[:rng.randint(1, 25)] for _ in range(rng.randint(1, 8)))
        add("mixed", s)

    # Long texts.
    for n in (1500, 4000):
        add("long", " ".join(rng.choice(WORDS) for _ in range(n // 6)))
    add("long", "".join(CODE) * 2)
    add("long", SCRIPTS["cjk"] * 20)
    add("long", "9" * 500)
    add("long", " " * 300 + "x" + "\n" * 100)

    # The real ICL prompts and variants.
    prompts = json.load(open(PROMPTS))["prompts"]
    for p in prompts:
        add("icl", p["text"])
    for p in prompts[::4]:
        add("icl", p["text"] + " ")
        add("icl", " " + p["text"])
        add("icl", p["text"].upper())
    return out


# ---------------------------------------------------------------------------------------------
# Metadata-only GGUF


def metadata_only_gguf(src, dst):
    """Copy every key/value pair of `src` byte for byte into a GGUF with no tensors."""
    r = GGUFReader(src)
    fields = [f for name, f in r.fields.items() if not name.startswith("GGUF.")]
    alignment = int(r.fields["general.alignment"].contents()) if "general.alignment" in r.fields else 32
    with open(dst, "wb") as f:
        f.write(b"GGUF")
        f.write(np.uint32(3).tobytes())
        f.write(np.uint64(0).tobytes())  # tensors
        f.write(np.uint64(len(fields)).tobytes())
        for field in fields:
            for part in field.parts:
                f.write(part.tobytes())
        pad = -f.tell() % alignment
        f.write(b"\0" * pad)
    return {name: b"".join(p.tobytes() for p in f.parts) for name, f in r.fields.items()
            if name.startswith("tokenizer.")}


def load_tok(path):
    folder, name = os.path.split(path)
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return tok, time.perf_counter() - t0


def encode_all(tok, strings):
    return [tok(s)["input_ids"] for s in strings]


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = gen_strings()
    strings = [s for _, s in cases]
    print(f"{len(strings)} strings")
    fixture = {
        "made_by": "tools/make_tokenizer_fixtures.py",
        "reference": f"transformers {transformers.__version__} (tokenizers {tokenizers.__version__}): "
                     "AutoTokenizer.from_pretrained(folder, gguf_file=NAME)(text)['input_ids']",
        "categories": [c for c, _ in cases],
        "strings": strings,
        "models": {},
    }
    tok_kv = {}
    for asset, fixture_name in MODELS.items():
        path = asset_path(asset)
        if path is None:
            print(f"{asset}: not cached, skipped")
            continue
        tok, load_s = load_tok(path)
        ids = encode_all(tok, strings)
        entry = {"file": os.path.basename(path), "transformers_load_s": round(load_s, 2), "ids": ids}
        if fixture_name is not None:
            with tempfile.TemporaryDirectory() as tmp:
                small = os.path.join(tmp, f"{fixture_name}.tokenizer.gguf")
                tok_kv[asset] = metadata_only_gguf(path, small)
                small_tok, _ = load_tok(small)
                small_ids = encode_all(small_tok, strings)
                bad = [i for i, (a, b) in enumerate(zip(ids, small_ids)) if a != b]
                if bad:
                    sys.exit(f"{asset}: the metadata-only GGUF tokenizes {len(bad)} strings differently")
                gz = os.path.join(OUT, f"{fixture_name}.tokenizer.gguf.gz")
                with open(small, "rb") as f_in, gzip.GzipFile(gz, "wb", compresslevel=9, mtime=0) as f_out:
                    shutil.copyfileobj(f_in, f_out)
                raw = os.path.getsize(small)
            entry["gguf_fixture"] = os.path.basename(gz)
            print(f"{asset}: metadata-only GGUF {raw / 1e6:.2f} MB, gzipped {os.path.getsize(gz) / 1e6:.2f} MB")
        fixture["models"][asset] = entry
        n_tok = sum(len(x) for x in ids)
        print(f"{asset}: transformers load {load_s:.1f} s, {n_tok} tokens")

    other, base = SAME_VOCAB
    other_path = asset_path(other)
    if other_path is not None and base in tok_kv:
        with tempfile.TemporaryDirectory() as tmp:
            kv = metadata_only_gguf(other_path, os.path.join(tmp, "x.gguf"))
        # Only tokenizer.ggml.* builds the tokenizer; the chat template is text for chat front ends.
        ggml = {k for k in set(kv) | set(tok_kv[base]) if k.startswith("tokenizer.ggml.")}
        diff = sorted(k for k in ggml if kv.get(k) != tok_kv[base].get(k))
        other_diff = sorted(k for k in (set(kv) | set(tok_kv[base])) - ggml if kv.get(k) != tok_kv[base].get(k))
        entry = {"file": os.path.basename(other_path),
                 "tokenizer_ggml_identical_to": base if not diff else None,
                 "differing_tokenizer_ggml_keys": diff,
                 "differing_other_tokenizer_keys": other_diff}
        if diff:
            entry["ids"] = encode_all(load_tok(other_path)[0], strings)
        fixture["models"][other] = entry
        print(f"{other}: tokenizer.ggml.* {'identical to ' + base if not diff else 'differs: ' + str(diff)}; "
              f"other tokenizer.* keys differing: {other_diff}")

    out = os.path.join(OUT, "parity.json.gz")
    with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as f:
        f.write(json.dumps(fixture, ensure_ascii=False, separators=(",", ":")).encode())
    print(f"{out}: {os.path.getsize(out) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
