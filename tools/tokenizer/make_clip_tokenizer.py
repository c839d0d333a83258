#!/usr/bin/env python3
"""Build crates/build/assets/clip_tokenizer.json (Hugging Face `tokenizers` format) for CLIP ViT-L/14.

Tools only -- never part of the product path.

Input: OpenAI's MIT-licensed CLIP BPE file `bpe_simple_vocab_16e6.txt.gz`. If --bpe is not given it
is fetched with `pip download --no-deps` of a pinned `open-clip-torch` wheel into a temp dir and only
that one file is unzipped out of the wheel (no other network use).

Vocab (49,408) and merges (48,894) are built exactly as OpenAI's `clip/simple_tokenizer.py`
(SimpleTokenizer.__init__) does:
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab  = bytes_to_unicode() values, then each + '</w>', then ''.join(merge) for each merge,
             then '<|startoftext|>' (49406), '<|endoftext|>' (49407)

The tokenizer pipeline is the one transformers builds for CLIPTokenizer(Fast) (openai/clip-vit-large-patch14):
normalizer NFC + Replace(\\s+ -> ' ') + Lowercase; pre-tokenizer Split(CLIP regex, removed, invert) +
ByteLevel(add_prefix_space=False); BPE(end_of_word_suffix='</w>', unk='<|endoftext|>');
post-processor RobertaProcessing (BOS 49406 ... EOS 49407); ByteLevel decoder. It is produced by
instantiating transformers' CLIPTokenizer with vocab=dict / merges=list (NOT vocab_file/merges_file:
in transformers 5.x those are silently ignored and the result is garbage) and saving its backend.
No padding / truncation is stored in the json; callers pad with 49407 to 77 and truncate to 77
(BOS + first 75 content tokens + EOS).

Run with the reference venv:
    tools/reference/.venv/bin/python tools/tokenizer/make_clip_tokenizer.py
"""

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

OPEN_CLIP_WHEEL = "open-clip-torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# sha256 of bpe_simple_vocab_16e6.txt.gz as shipped in open-clip-torch 3.3.0 (same file as openai/CLIP).
BPE_GZ_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

N_VOCAB = 49408
N_MERGES = 49152 - 256 - 2  # 48894
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "crates", "cli", "assets", "clip_tokenizer.json")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_bpe(dest_dir):
    """pip download the pinned open-clip-torch wheel (no deps) and extract only the BPE file."""
    wheel_dir = os.path.join(dest_dir, "wheel")
    os.makedirs(wheel_dir, exist_ok=True)
    subprocess.check_call(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "-d", wheel_dir, OPEN_CLIP_WHEEL]
    )
    wheels = [f for f in os.listdir(wheel_dir) if f.endswith(".whl")]
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in {wheel_dir}, got {wheels}")
    out = os.path.join(dest_dir, "bpe_simple_vocab_16e6.txt.gz")
    with zipfile.ZipFile(os.path.join(wheel_dir, wheels[0])) as z, open(out, "wb") as f:
        f.write(z.read(BPE_MEMBER))
    return out


def bytes_to_unicode():
    """OpenAI CLIP / GPT-2 reversible byte -> unicode char table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def load_vocab_merges(bpe_path):
    """Exactly SimpleTokenizer.__init__: returns (vocab dict token->id, merges list of (a, b))."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:N_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend([BOS, EOS])
    assert len(merges) == N_MERGES, len(merges)
    assert len(vocab) == N_VOCAB, len(vocab)
    assert all(len(m) == 2 for m in merges)
    enc = dict(zip(vocab, range(len(vocab))))
    assert len(enc) == N_VOCAB, "duplicate vocab entries"
    assert enc[BOS] == 49406 and enc[EOS] == 49407
    return enc, merges


def build_tokenizer(vocab, merges):
    from transformers import CLIPTokenizerFast  # transformers 5.x: alias of the tokenizers-backed CLIPTokenizer

    tok = CLIPTokenizerFast(
        vocab=vocab, merges=list(merges),
        unk_token=EOS, bos_token=BOS, eos_token=EOS, pad_token=EOS,
        model_max_length=77,
    )
    backend = tok.backend_tokenizer
    # Sanity: the backend really uses our vocab (guards against the vocab_file pitfall).
    assert backend.get_vocab_size(with_added_tokens=True) == N_VOCAB, backend.get_vocab_size()
    assert backend.token_to_id(BOS) == 49406 and backend.token_to_id(EOS) == 49407
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", help="path to bpe_simple_vocab_16e6.txt.gz (default: fetch from the open-clip-torch wheel)")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output tokenizer.json (default: %(default)s)")
    ap.add_argument("--allow-other-bpe", action="store_true", help="do not enforce the pinned sha256 of the BPE file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bpe = args.bpe or fetch_bpe(tmp)
        digest = sha256_file(bpe)
        print(f"bpe file: {bpe}\n  sha256 {digest}")
        if digest != BPE_GZ_SHA256 and not args.allow_other_bpe:
            raise SystemExit(f"unexpected sha256 for {bpe} (want {BPE_GZ_SHA256}); use --allow-other-bpe")
        vocab, merges = load_vocab_merges(bpe)

    print(f"vocab {len(vocab)}, merges {len(merges)}")
    tok = build_tokenizer(vocab, merges)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Save, then re-serialise with sorted-key-stable json.dumps so the file is byte-reproducible.
    tmp_out = args.out + ".tmp"
    tok.backend_tokenizer.save(tmp_out, pretty=False)
    with open(tmp_out, "r", encoding="utf-8") as f:
        data = json.load(f)
    os.remove(tmp_out)
    assert data["truncation"] is None and data["padding"] is None
    assert len(data["model"]["vocab"]) == N_VOCAB and len(data["model"]["merges"]) == N_MERGES
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    from tokenizers import Tokenizer
    t2 = Tokenizer.from_file(args.out)
    assert t2.encode("a photo of a cat").ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    print(f"wrote {args.out}\n  size {os.path.getsize(args.out)} bytes\n  sha256 {sha256_file(args.out)}")


if __name__ == "__main__":
    main()
