#!/usr/bin/env python3
"""Reference goldens for prompts as A1111 users write them (issue 18): `(word:1.2)` weights, BREAK,
prompts over 75 tokens, CLIP skip, textual-inversion embeddings, and the official `plain` syntax.

    tools/reference/.venv/bin/python tools/reference/prompt_goldens.py \
        --fixtures target/fixtures --out tests/goldens/prompts.npz

Writes one uncompressed npz (array names `{case}__{array}`; list in tools/reference/README.md) with
four groups of cases:

* `a1111` (`a00`...): an independent implementation of AUTOMATIC1111's prompt pipeline (below):
  parsed segments, chunk ids and weights, token count, the text encoder's hidden states at the case's
  CLIP skip, and the conditioning after A1111's "Original" emphasis. Prompts A1111 raises on are
  listed as error cases (nothing stored but the entry in `cases`).
* `plain` (`p00`...): the official AnimateDiff / diffusers behaviour: the prompt is text (brackets
  literal, no BREAK), trigger words replaced by their embedding's ids, BOS + 75 + EOS, EOS padding.
* `diffusers` (`d00`...): cross-checks made with diffusers' own code: `encode_prompt(clip_skip=c)`
  and `load_textual_inversion` of the four embedding files; each is asserted inside this script to
  equal the `plain` implementation here (clip skip N = c + 1).
* `loop`: the 4-step DDIM loop of `make_goldens.py`'s `personalized_v2` golden with a 2-chunk
  weighted prompt and a 1-chunk negative padded with the empty-prompt chunk (A1111's
  `pad_cond_uncond`), CLIP skip 2.

The text encoder is the `personalized` fixture's (loaded by make_goldens.py as for the
personalized_v2 golden) with the four embedding files of `<fixtures>/embeddings/` appended to its
token table, in this order (the order of `build-graph --embedding` flags the Rust tests use):
easyneg.pt (3 vectors, ids 49408-49410), style.safetensors as `mystyle` (49411),
learned_embeds.bin as `<toy>` (49412), clipl.safetensors as `clipl` (49413-49414).

A1111 algorithm reproduced (written here from its documented behaviour and source, not copied):
AUTOMATIC1111/stable-diffusion-webui, branch master (v1.10):
  * modules/prompt_parser.py: parse_prompt_attention, re_attention, re_break
    https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/prompt_parser.py
  * modules/sd_hijack_clip.py: FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line / process_tokens /
    forward, FrozenCLIPEmbedderWithCustomWords.tokenize / encode_with_transformers
    https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_hijack_clip.py
  * modules/sd_emphasis.py: EmphasisOriginal.after_transformers ("Original", the default)
    https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_emphasis.py
  * modules/sd_hijack.py: EmbeddingsWithFixes (embedding vectors replace the token embeddings)
    https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_hijack.py
  * modules/textual_inversion/textual_inversion.py: EmbeddingDatabase.register_embedding /
    find_embedding_at_position
    https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/textual_inversion/textual_inversion.py
  * modules/sd_samplers_cfg_denoiser.py: CFGDenoiser.pad_cond_uncond, pad_cond (the empty prompt
    is sd_models.get_empty_cond: the "" prompt through the same path)
    https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/sd_samplers_cfg_denoiser.py
Settings: emphasis "Original", comma_padding_backtrack 20 (defaults), CLIP_stop_at_last_layers = the
case's clip skip.

Deterministic (same fixtures and packages => byte-identical file; run it twice and compare). Tools
only, never in CI: the golden is committed.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import copy
import hashlib
import json
import re
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402

TOOL = "tools/reference/prompt_goldens.py"
REPO = Path(__file__).resolve().parents[2]
TOKENIZER_JSON = REPO / "crates" / "build" / "assets" / "clip_tokenizer.json"

BOS, EOS = 49406, 49407
VOCAB = 49408
CHUNK = 75  # content tokens per 77-token chunk
BACKTRACK = 20  # A1111 opts.comma_padding_backtrack default
ROUND_MULT = 1.1
SQUARE_MULT = 1 / 1.1
GUIDANCE = 7.5
LOOP_CLIP_SKIP = 2

# (file in <fixtures>/embeddings/, trigger word): order = token ids 49408...
EMBEDDINGS = (
    ("easyneg.pt", "easyneg"),
    ("style.safetensors", "mystyle"),
    ("learned_embeds.bin", "<toy>"),
    ("clipl.safetensors", "clipl"),
)
EXPECTED_VECTORS = {"easyneg": 3, "mystyle": 1, "<toy>": 1, "clipl": 2}


class PromptError(ValueError):
    """A prompt A1111 raises on (float() of a weight that is not a number)."""


class A1111Quirk(RuntimeError):
    """A situation where A1111 does something no runtime should copy; no golden may depend on it."""


# ----------------------------------------------------------------------------------------------
# Parser: A1111 parse_prompt_attention semantics
# ----------------------------------------------------------------------------------------------

# A weight closing a round bracket: ':' optional spaces, [+-]? then digits and dots, spaces, ')'.
# (A1111's pattern; its float() of the captured text is what raises on '1.2.3' or '.')
WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
# BREAK as a whole upper-case word, with the white space around it swallowed.
BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*")
SYNTAX_CHARS = "\\()[]:"
ESCAPABLE = "()[]\\"
BREAK_MARK = -1.0  # the weight of the BREAK marker segment; brackets multiply it like any other


def parse_a1111(prompt: str) -> list[tuple[str, float]]:
    """Split `prompt` into (text, weight) segments, A1111's way.

    The prompt is read as a sequence of items: `\\(`, `\\)`, `\\[`, `\\]`, `\\\\` (the escaped
    character, weight 1), a backslash before anything else (an empty text: the backslash is
    dropped), `(` and `[` (open), `:w)` (close the innermost `(` with weight w), `)` and `]` (close
    with 1.1 and 1/1.1), a run of characters that are none of `\\()[]:` (text), and `:` (text).
    A closer with nothing of its kind open, and a `:w)` with no `(` open, are text. Each text item
    is split at `BREAK` words, a marker segment ("BREAK", -1) between the pieces. Closing a bracket
    multiplies the weight of every segment appended since it was opened (float64, in closing
    order); brackets left open are closed at the end, first the round ones (outermost first), then
    the square ones. An empty result is [("", 1.0)]. Finally neighbouring segments with equal
    weights are joined.
    """
    segments: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale_since(start: int, factor: float) -> None:
        for seg in segments[start:]:
            seg[1] *= factor

    def add_text(text: str) -> None:
        pieces = BREAK_WORD.split(text)
        segments.append([pieces[0], 1.0])
        for piece in pieces[1:]:
            segments.append(["BREAK", BREAK_MARK])
            segments.append([piece, 1.0])

    i, n = 0, len(prompt)
    while i < n:
        c = prompt[i]
        if c == "\\":
            if i + 1 < n and prompt[i + 1] in ESCAPABLE:
                segments.append([prompt[i + 1], 1.0])
                i += 2
            else:
                segments.append(["", 1.0])
                i += 1
        elif c == "(":
            rounds.append(len(segments))
            i += 1
        elif c == "[":
            squares.append(len(segments))
            i += 1
        elif c == ":":
            m = WEIGHT_CLOSE.match(prompt, i)
            if m is not None and rounds:
                try:
                    w = float(m.group(1))
                except ValueError as e:
                    raise PromptError(f"weight {m.group(1)!r} at {i} is not a number (A1111 raises: {e})") from None
                scale_since(rounds.pop(), w)
                i = m.end()
            elif m is not None:
                add_text(m.group(0))
                i = m.end()
            else:
                add_text(":")
                i += 1
        elif c in ")]":
            stack, factor = (rounds, ROUND_MULT) if c == ")" else (squares, SQUARE_MULT)
            if stack:
                scale_since(stack.pop(), factor)
            else:
                add_text(c)
            i += 1
        else:
            j = i + 1
            while j < n and prompt[j] not in SYNTAX_CHARS:
                j += 1
            add_text(prompt[i:j])
            i = j
    for start in rounds:
        scale_since(start, ROUND_MULT)
    for start in squares:
        scale_since(start, SQUARE_MULT)
    if not segments:
        segments = [["", 1.0]]
    merged: list[list] = [segments[0]]
    for seg in segments[1:]:
        if seg[1] == merged[-1][1]:
            merged[-1][0] += seg[0]
        else:
            merged.append(seg)
    return [(t, w) for t, w in merged]


def is_break(segment: tuple[str, float]) -> bool:
    return segment[0] == "BREAK" and segment[1] == BREAK_MARK


def check_parser_doc_examples() -> None:
    """The examples A1111 documents in parse_prompt_attention's docstring (its doctests)."""
    examples = [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
         [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
          (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
    ]
    for prompt, want in examples:
        got = parse_a1111(prompt)
        assert got == want, (prompt, got, want)
    print(f"parser: A1111's {len(examples)} documented examples reproduced exactly")


# ----------------------------------------------------------------------------------------------
# Tokenizer and embeddings
# ----------------------------------------------------------------------------------------------


class ClipTokenizer:
    """The product's tokenizer (crates/build/assets/clip_tokenizer.json), no special tokens: A1111
    tokenizes every segment with `add_special_tokens=False, truncation=False`."""

    def __init__(self, path: Path):
        from tokenizers import Tokenizer

        self.path = path
        self.tok = Tokenizer.from_file(str(path))
        self.comma = self.tok.token_to_id(",</w>")
        assert self.comma == 267, self.comma
        assert self.tok.token_to_id("<|startoftext|>") == BOS and self.tok.token_to_id("<|endoftext|>") == EOS

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def token(self, i: int) -> str:
        return self.tok.id_to_token(i)


@dataclass
class Embedding:
    file: str
    trigger: str
    vectors: torch.Tensor  # float32 [n, D]
    stored_dtype: str
    first_id: int = 0
    trigger_ids: tuple = ()

    @property
    def ids(self) -> list[int]:
        return list(range(self.first_id, self.first_id + self.vectors.shape[0]))


def read_embedding(path: Path) -> tuple[torch.Tensor, str]:
    """A1111 .pt (`string_to_param` with one entry), diffusers `learned_embeds.bin` ({token: [D]}),
    `.safetensors` with `emb_params`, or `clip_l` (taken from an SDXL `clip_l` + `clip_g` file). Returns float32 [n, D] (as A1111's
    `.to(dtype=torch.float32)`) and the stored dtype."""
    if path.suffix == ".safetensors":
        sd = load_file(path)
        if "clip_l" in sd:  # an SDXL file (clip_l + clip_g): its CLIP-L part is SD1.5's
            t = sd["clip_l"]
        elif set(sd) == {"emb_params"}:
            t = sd["emb_params"]
        else:
            raise mg.FixtureError(f"{path.name}: expected emb_params or clip_l, found {sorted(sd)}")
    else:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "string_to_param" in obj:
            params = obj["string_to_param"]
            if len(params) != 1:
                raise mg.FixtureError(f"{path.name}: string_to_param has {len(params)} entries")
            t = next(iter(params.values()))
        elif isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), torch.Tensor):
            t = next(iter(obj.values()))
        else:
            raise mg.FixtureError(f"{path.name}: neither an A1111 embedding nor a diffusers concept")
    dtype = str(t.dtype).replace("torch.", "")
    t = t.detach().to(torch.float32)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    return t.contiguous(), dtype


class EmbeddingTable:
    """The embeddings appended to the token table (ids VOCAB...) and A1111's lookup: by the trigger
    word's token ids (tokenized like the prompt, hence case-insensitive), candidates sharing a first
    id tried longest first (EmbeddingDatabase.register_embedding keeps them sorted by length)."""

    def __init__(self, embeddings: list[Embedding], tok: ClipTokenizer, width: int):
        self.embeddings = embeddings
        next_id = VOCAB
        self.by_first: dict[int, list[Embedding]] = {}
        for emb in embeddings:
            if emb.vectors.shape[1] != width:
                raise mg.FixtureError(f"{emb.file}: width {emb.vectors.shape[1]}, the text encoder has {width}")
            emb.first_id = next_id
            next_id += emb.vectors.shape[0]
            emb.trigger_ids = tuple(tok.encode(emb.trigger))
            bucket = self.by_first.setdefault(emb.trigger_ids[0], [])
            bucket.append(emb)
            bucket.sort(key=lambda e: len(e.trigger_ids), reverse=True)  # stable: ties keep load order
        self.end_id = next_id
        self.vectors = torch.cat([e.vectors for e in embeddings]) if embeddings else torch.zeros(0, width)

    def match(self, tokens: list[int], pos: int) -> Embedding | None:
        for emb in self.by_first.get(tokens[pos], ()):
            if tuple(tokens[pos:pos + len(emb.trigger_ids)]) == emb.trigger_ids:
                return emb
        return None


# ----------------------------------------------------------------------------------------------
# Chunking: A1111 tokenize_line semantics
# ----------------------------------------------------------------------------------------------


@dataclass
class Chunks:
    ids: list[list[int]] = field(default_factory=list)  # each 77 long, BOS ... EOS
    weights: list[list[float]] = field(default_factory=list)  # float64 as A1111 keeps them
    token_count: int = 0


def chunk_a1111(segments: list[tuple[str, float]], tok: ClipTokenizer, table: EmbeddingTable) -> Chunks:
    """A1111's tokenize_line: segments tokenized separately; 75 content tokens per chunk; when a
    token arrives at a full chunk and is not a comma, and the chunk's last comma (`last_comma`, the
    comma's index in the chunk; -1 after every new chunk) lies at most 20 tokens back, the tokens
    after that comma move to the next chunk; an embedding takes the weight of its segment, expands
    to its n ids, and starts a new chunk when it does not fit whole; a BREAK marker closes the chunk
    (a new one starts even if it is empty). Each chunk is BOS + 75 (EOS-padded, weight 1) + EOS.
    token_count: 75 per closed chunk, plus the last chunk's content length; the last chunk exists
    only if it has content or there is no chunk at all."""
    out = Chunks()
    cur_ids: list[int] = []
    cur_w: list[float] = []
    last_comma = -1

    def close(final: bool = False) -> None:
        nonlocal cur_ids, cur_w, last_comma
        out.token_count += len(cur_ids) if final else CHUNK
        pad = CHUNK - len(cur_ids)
        ids = [BOS] + cur_ids + [EOS] * max(pad, 0) + [EOS]
        ws = [1.0] + cur_w + [1.0] * max(pad, 0) + [1.0]
        assert len(ids) == CHUNK + 2, len(ids)
        out.ids.append(ids)
        out.weights.append(ws)
        cur_ids, cur_w, last_comma = [], [], -1

    for text, weight in segments:
        if is_break((text, weight)):
            close()
            continue
        tokens = tok.encode(text)
        pos = 0
        while pos < len(tokens):
            t = tokens[pos]
            if t == tok.comma:
                last_comma = len(cur_ids)
            elif len(cur_ids) == CHUNK and last_comma != -1 and len(cur_ids) - last_comma <= BACKTRACK:
                cut = last_comma + 1
                moved_ids, moved_w = cur_ids[cut:], cur_w[cut:]
                if any(i >= VOCAB for i in moved_ids):
                    # A1111 moves the ids but not the chunk's `fixes`: the vectors would land on
                    # the old chunk's padding and token 0 would stand in the new one.
                    raise A1111Quirk("the comma back-track would move an embedding to the next chunk")
                cur_ids, cur_w = cur_ids[:cut], cur_w[:cut]
                close()
                cur_ids, cur_w = moved_ids, moved_w
            if len(cur_ids) == CHUNK:
                close()
            emb = table.match(tokens, pos)
            if emb is None:
                cur_ids.append(t)
                cur_w.append(weight)
                pos += 1
                continue
            n_vec = emb.vectors.shape[0]
            if len(cur_ids) + n_vec > CHUNK:
                close()
            cur_ids += emb.ids
            cur_w += [weight] * n_vec
            pos += len(emb.trigger_ids)
    if cur_ids or not out.ids:
        close(final=True)
    return out


def chunk_plain(prompt: str, tok: ClipTokenizer, table: EmbeddingTable) -> Chunks:
    """The official behaviour: the whole prompt is text; trigger id sequences become the
    embedding's ids; BOS + the first 75 ids + EOS, EOS padding to 77; weights 1. token_count = the
    content length before truncation."""
    tokens = tok.encode(prompt)
    content: list[int] = []
    pos = 0
    while pos < len(tokens):
        emb = table.match(tokens, pos)
        if emb is None:
            content.append(tokens[pos])
            pos += 1
        else:
            content += emb.ids
            pos += len(emb.trigger_ids)
    kept = content[:CHUNK]
    ids = [BOS] + kept + [EOS] * (CHUNK - len(kept) + 1)
    return Chunks([ids], [[1.0] * (CHUNK + 2)], len(content))


# ----------------------------------------------------------------------------------------------
# Text encoder, CLIP skip, embeddings, emphasis
# ----------------------------------------------------------------------------------------------


class TextEncoder:
    """transformers CLIPTextModel (the personalized fixture's) with output_hidden_states; CLIP skip N
    (A1111: 1 = last layer): N = 1 last_hidden_state, else final_layer_norm(hidden_states[-N]).
    Embedding ids (>= 49408) are looked up as token 0 and their token-embedding rows replaced by the
    vectors (A1111's EmbeddingsWithFixes: the vectors replace the token embeddings, before the
    position embeddings are added)."""

    def __init__(self, model, table: EmbeddingTable):
        self.model = model
        self.table = table
        self.layers = model.config.num_hidden_layers
        self.final_ln = model.final_layer_norm if hasattr(model, "final_layer_norm") else model.text_model.final_layer_norm
        embeddings = model.embeddings if hasattr(model, "embeddings") else model.text_model.embeddings
        self.token_embedding = embeddings.token_embedding
        self._fix = None
        self.token_embedding.register_forward_hook(self._hook)

    def _hook(self, _module, _args, out):
        if self._fix is None:
            return out
        mask, rows = self._fix
        out = out.clone()
        out[mask] = rows
        return out

    @torch.no_grad()
    def encode_chunk(self, ids: list[int], clip_skip: int) -> torch.Tensor:
        """One 77-token chunk -> [1, 77, D] (A1111 encodes chunk by chunk)."""
        if not 1 <= clip_skip <= self.layers:
            raise ValueError(f"clip skip {clip_skip} outside 1..{self.layers}")
        t = torch.tensor([ids], dtype=torch.int64)
        extra = t >= VOCAB
        if (t >= self.table.end_id).any():
            raise ValueError("id beyond the embedding table")
        self._fix = (extra, self.table.vectors[t[extra] - VOCAB]) if extra.any() else None
        try:
            out = self.model(torch.where(extra, torch.zeros_like(t), t), attention_mask=None, output_hidden_states=True)
        finally:
            self._fix = None
        if clip_skip == 1:
            return out.last_hidden_state
        return self.final_ln(out.hidden_states[-clip_skip])


def emphasis_original(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """A1111 EmphasisOriginal on one chunk, float32: z·w per token, then z·(mean before / mean after),
    means over the whole [1, 77, D] chunk."""
    m = torch.asarray([weights])  # float64 Python floats -> float32 (torch's default dtype)
    assert m.dtype == torch.float32
    before = z.mean()
    z = z * m.reshape(m.shape + (1,)).expand(z.shape)
    after = z.mean()
    return z * (before / after)


@dataclass
class Encoded:
    ids: np.ndarray  # int64 [k, 77]
    weights: np.ndarray  # float32 [k, 77]
    token_count: int
    hidden: np.ndarray  # float32 [k, 77, D]
    cond: np.ndarray  # float32 [1, 77k, D]


def encode(chunks: Chunks, te: TextEncoder, clip_skip: int, emphasis: bool) -> Encoded:
    hidden, conds = [], []
    for ids, ws in zip(chunks.ids, chunks.weights):
        z = te.encode_chunk(ids, clip_skip)
        hidden.append(z)
        conds.append(emphasis_original(z, ws) if emphasis else z)
    return Encoded(
        ids=np.array(chunks.ids, dtype=np.int64),
        weights=np.array(chunks.weights, dtype=np.float32),
        token_count=chunks.token_count,
        hidden=torch.cat(hidden).numpy(),
        cond=torch.hstack(conds).numpy(),
    )


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

FOX = ("masterpiece, best quality, a small red fox sitting in a snowy forest clearing at dawn, soft golden light, "
       "frost on the pine branches, breath visible in the cold air, detailed fur, shallow depth of field, "
       "bokeh, cinematic composition, national geographic photo, sharp focus on the eyes, gentle wind, "
       "falling snowflakes, warm and cold color contrast, ")  # 71 tokens, its last comma is token 71
FOX_TAIL = ", morning mist over the frozen river, tiny paw prints in the fresh snow"

CASTLE = ("(masterpiece:1.2), (best quality:1.2), ultra detailed, a breathtaking cinematic wide shot of an ancient castle "
          "perched on a jagged cliff above a stormy sea at sunset, dramatic clouds, golden hour light, volumetric "
          "fog, crashing waves, seagulls circling the towers, a lone knight in silver armor walking along the "
          "winding stone path, (red cape flowing in the wind:1.1), lanterns glowing in the windows, moss covered walls, "
          "intricate gothic architecture, sharp focus, highly detailed textures, 8k uhd, octane render, trending "
          "on artstation, vivid colors, depth of field, [film grain], 35mm lens, award winning photography, "
          "a narrow bridge of rope and planks swaying over the chasm, ravens on the battlements, torches along the outer wall, "
          "ivy climbing the keep")

CASTLE_200 = ("(masterpiece:1.2), (best quality:1.2), (photorealistic:1.3), a breathtaking cinematic wide shot of an ancient castle "
              "perched on a jagged cliff above a stormy sea at sunset, dramatic clouds, golden hour light, ((volumetric fog)), "
              "crashing waves, seagulls circling the towers, a lone knight in silver armor walking along the winding stone path, "
              "(red cape flowing in the wind:1.15), lanterns glowing in the windows, moss covered walls, intricate gothic architecture, "
              "sharp focus, highly detailed textures, 8k uhd, octane render, trending on artstation, vivid colors, depth of field, "
              "[film grain], [[bokeh]], 35mm lens, award winning photography, epic fantasy atmosphere, (mysterious and serene mood:0.8), "
              "reflections on wet cobblestones, distant mountains under a purple sky, stars beginning to appear, "
              "a dragon silhouette far away, smooth camera pan, consistent lighting across frames, (a narrow bridge of rope and planks:1.05) "
              "swaying over the chasm, ravens on the battlements, torches along the outer wall, ivy climbing the old keep, "
              "(a tiny boat tossed by the waves:0.9), lightning in the distance")

LOOP_PROMPT = ("(masterpiece:1.2), best quality, a small red fox running through a (snowy forest:1.1) at dawn, "
               "[blurry background], soft golden light, frost on the pine branches BREAK "
               "((detailed fur)), falling snowflakes, (warm and cold color contrast:0.9), cinematic")
LOOP_NEGATIVE = "easyneg, (lowres:1.3), blurry"


def content(ids: list[int]) -> list[int]:
    """The content of a chunk: between BOS and the first EOS."""
    body = ids[1:CHUNK + 1]
    return body[:body.index(EOS)] if EOS in body else body


@dataclass
class Case:
    name: str
    prompt: str
    clip_skip: int
    note: str
    syntax: str = "a1111"
    group: str = "a1111"
    error: bool = False
    expect: object = None  # callable(Chunks, tok) -> None, asserts what the case is there for


def _n_chunks(k):
    def check(ch, _tok):
        assert len(ch.ids) == k, len(ch.ids)
    return check


def _backtrack_fired(ch, tok):
    c0 = content(ch.ids[0])
    assert len(ch.ids) >= 2 and len(c0) < CHUNK and c0[-1] == tok.comma, (len(c0), c0[-3:])


def _comma_at_boundary(ch, tok):
    c0, c1 = content(ch.ids[0]), content(ch.ids[1])
    assert len(c0) == CHUNK and c0[-1] != tok.comma and c1[0] == tok.comma, (c0[-2:], c1[:2])


def _comma_is_75th(ch, tok):
    c0, c1 = content(ch.ids[0]), content(ch.ids[1])
    assert len(c0) == CHUNK and c0[-1] == tok.comma and c1[0] != tok.comma


def _hard_cut(ch, tok):
    c0 = content(ch.ids[0])
    assert len(c0) == CHUNK and tok.comma not in c0[-BACKTRACK:], c0[-BACKTRACK:]


def _easyneg_moves(ch, _tok):
    c0, c1 = content(ch.ids[0]), content(ch.ids[1])
    assert len(c0) == 73 and c1[:3] == [VOCAB, VOCAB + 1, VOCAB + 2], (len(c0), c1[:3])


def _easyneg_after_backtrack(ch, tok):
    c0, c1 = content(ch.ids[0]), content(ch.ids[1])
    assert len(c0) == 71 and c0[-1] == tok.comma and c1[4:7] == [VOCAB, VOCAB + 1, VOCAB + 2], (len(c0), c1[:8])


def _has_ids(*want):
    def check(ch, _tok):
        flat = [i for ids in ch.ids for i in ids]
        for w in want:
            assert w in flat, (w, flat[:20])
    return check


def _no_embedding(ch, _tok):
    assert all(i < VOCAB for ids in ch.ids for i in ids)


def a1111_cases() -> list[Case]:
    rows = [
        ("a photo of a cat", 1, "plain text, one segment", None),
        ("a ((red)) fox", 2, "nesting: (( )) = 1.1^2", None),
        ("a [[red]] fox", 1, "nesting: [[ ]] = (1/1.1)^2", None),
        ("a ((red):1.5) fox", 2, "a weight around a bracket: 1.1 * 1.5", None),
        ("\\(x\\) and \\[y\\] and a \\\\ slash", 1, "escapes \\( \\) \\[ \\] \\\\ are literal text", None),
        ("a lone \\ backslash \\q and a trailing one \\", 2, "a backslash before anything else is dropped", None),
        ("a (red fox", 1, "unclosed ( weighs 1.1 to the end", None),
        ("a) red fox", 2, "a stray ) is literal text", None),
        ("[red (fox] jumps", 1, "crossed brackets: ] closes the [, the ( stays open to the end", None),
        ("a (red:0) fox", 2, "weight 0", None),
        ("a (red:-1) fox", 1, "negative weight", None),
        ("a (red:.5) fox", 2, "weight .5", None),
        ("a ( red fox : 1.5 ) in snow", 1, "white space around the weight", None),
        ("(photorealistic:1.3) portrait, (masterpiece:1.2), lowres", 2, "weights on multi-token words", None),
        ("a red fox BREAK a blue bird BREAK green grass", 1, "two BREAKs: three chunks", _n_chunks(3)),
        ("BREAK a red fox", 2, "leading BREAK: an empty first chunk", _n_chunks(2)),
        ("a red fox BREAK", 1, "trailing BREAK: no empty last chunk", _n_chunks(1)),
        ("a red fox BREAK BREAK blue bird", 2, "BREAK BREAK: an empty chunk between", _n_chunks(3)),
        ("(red fox BREAK blue bird)", 1, "BREAK inside ( ): its marker weight becomes -1.1, literal 'break' at -1.1", _n_chunks(1)),
        ("(red fox BREAK blue bird:1)", 2, "BREAK inside (...:1): the marker stays -1, so it still breaks", _n_chunks(2)),
        ("(red fox BREAK blue bird:0)", 1, "BREAK inside (...:0): -0.0 == 0.0, the marker merges into 'red foxBREAKblue bird'", _n_chunks(1)),
        ("BREAKFAST at dawn, break the ice, Break, aBREAK", 2, "not BREAK: part of a word, or not upper case", _n_chunks(1)),
        (FOX + "high dynamic range photography style" + FOX_TAIL, 1, "~95 tokens: the comma back-track moves 4 tokens", _backtrack_fired),
        (CASTLE, 2, "~160 tokens, weights, 3 chunks", _n_chunks(3)),
        (CASTLE_200, 1, "~216 tokens, 3 chunks, weights, back-track in chunk 2 (the printed prompt)", _n_chunks(3)),
        (FOX + "high dynamic range photography" + FOX_TAIL, 2, "a comma arrives as token 76: it opens chunk 2", _comma_at_boundary),
        (FOX + "high dynamic range" + FOX_TAIL, 1, "a comma is token 75: the back-track moves nothing", _comma_is_75th),
        ("masterpiece, best quality, a small red fox sitting in a snowy forest clearing at dawn, soft golden light, "
         "frost on the pine branches, breath visible in the cold air, detailed fur, shallow depth of field, "
         "bokeh, cinematic composition, national geographic photo of a quiet winter morning where the light of the rising sun "
         "falls across the frozen river and the fox looks up at the hills with calm eyes, tiny paw prints in the fresh snow",
         2, "no comma in the last 20 tokens: a hard cut", _hard_cut),
        (FOX + "high dynamic easyneg, blurry", 1, "easyneg (3 vectors) at token 74 does not fit: it moves whole", _easyneg_moves),
        (FOX + "high dynamic range photo easyneg, blurry", 2, "easyneg arrives at a full chunk: back-track first, then the embedding", _easyneg_after_backtrack),
        ("(easyneg:1.2), lowres, bad anatomy", 1, "a weighted multi-vector embedding", _has_ids(VOCAB, VOCAB + 1, VOCAB + 2)),
        ("EasyNeg, blurry", 2, "trigger in upper case", _has_ids(VOCAB)),
        ("a <toy> on a table", 1, "diffusers learned_embeds.bin trigger <toy>", _has_ids(VOCAB + 4)),
        ("a <toy>, on a table", 2, "'<toy>,' is not the trigger: CLIP's pre-tokenizer makes '>,' one piece", _no_embedding),
        ("mystyle portrait of a fox, [clipl]", 2, "emb_params (fp16) and clip_l embeddings, one weighted", _has_ids(VOCAB + 3, VOCAB + 5, VOCAB + 6)),
        ("easynegative, easy neg", 1, "not the trigger: other tokens", _no_embedding),
        ("", 2, "the empty prompt", _n_chunks(1)),
        ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", 1, "A1111's documented example", None),
        ("a (red:1.5 fox", 2, "':1.5' without ')' is text; the ( stays open", None),
        ("a red:1.5) fox", 1, "':1.5)' with no ( open is literal text", None),
        ("a [red:1.5] fox", 2, "a weight in [ ] is literal text", None),
        ("((a (b) c) d) e", 1, "nesting of three levels", None),
    ]
    errors = [
        ("a (red:1.2.3) fox", "weight '1.2.3': float() raises"),
        ("a (red: . ) fox", "weight '.': float() raises"),
        ("((fox:1..5))", "weight '1..5': float() raises"),
    ]
    cases = [Case(f"a{i:02d}", p, cs, note, expect=ex) for i, (p, cs, note, ex) in enumerate(rows)]
    n = len(cases)
    cases += [Case(f"a{n + i:02d}", p, 1, note, error=True) for i, (p, note) in enumerate(errors)]
    return cases


def plain_cases() -> list[Case]:
    rows = [
        (FOX + "high dynamic range photography style" + FOX_TAIL, 1, "95 tokens: truncated to 75"),
        ("a (red:1.5) fox [blue] BREAK bird \\(x\\)", 2, "brackets, BREAK and backslashes are literal text"),
        ("easyneg, mystyle, clipl, a cat and a <toy>", 1, "the four embeddings"),
        ("EasyNeg portrait", 2, "trigger in upper case"),
        ("", 1, "the empty prompt"),
        (FOX + "high dynamic easyneg", 2, "the truncation cuts easyneg after its first 2 vectors"),
    ]
    return [Case(f"p{i:02d}", p, cs, note, syntax="plain", group="plain") for i, (p, cs, note) in enumerate(rows)]


def check_quirk_detected(tok: ClipTokenizer, table: EmbeddingTable) -> str:
    """The one A1111 behaviour this tool refuses to turn into a golden: the comma back-track moving
    an embedding (sd_hijack_clip.py tokenize_line relocates `tokens`/`multipliers` but leaves the
    PromptChunkFix entries, with their old offsets, on the earlier chunk)."""
    prompt = FOX + "high easyneg photo style"
    try:
        chunk_a1111(parse_a1111(prompt), tok, table)
    except A1111Quirk as e:
        return f"{prompt[-40:]!r}: {e}"
    raise AssertionError("the back-track over an embedding was not detected")


# ----------------------------------------------------------------------------------------------
# diffusers cross-checks
# ----------------------------------------------------------------------------------------------


def diffusers_tokenizer(path: Path):
    """transformers' CLIPTokenizer built from the product tokenizer's vocab and merges (what a
    diffusers pipeline holds); checked to tokenize like the product's on every prompt used."""
    from transformers import CLIPTokenizer

    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in data["model"]["merges"]]
    end = "<|endoftext|>"
    tok = CLIPTokenizer(vocab=vocab, merges=merges, unk_token=end, bos_token="<|startoftext|>", eos_token=end,
                        pad_token=end, model_max_length=77)
    assert tok("a photo of a cat")["input_ids"] == [BOS, 320, 1125, 539, 320, 2368, EOS]
    return tok


def make_pipeline(fx, image, text_encoder, tokenizer):
    """The smallest real StableDiffusionPipeline: the fixture VAE and text encoder, an untrained UNet
    (never called), the official DDIM scheduler. Only encode_prompt / load_textual_inversion run."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    if not hasattr(text_encoder, "text_model"):
        # diffusers 0.42.1 encode_prompt(clip_skip=...) reads text_encoder.text_model.final_layer_norm;
        # transformers 5 dropped the `text_model` level. A plain namespace (not a submodule) gives
        # that path the same LayerNorm module.
        text_encoder.text_model = types.SimpleNamespace(final_layer_norm=text_encoder.final_layer_norm)
    unet = UNet2DConditionModel(**mg.unet2d_config(fx.arch))
    return StableDiffusionPipeline(vae=image.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=mg.make_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@torch.no_grad()
def diffusers_encode(pipe, prompt: str, clip_skip: int | None) -> tuple[np.ndarray, np.ndarray]:
    """encode_prompt as the pipeline calls it; the ids are those encode_prompt tokenizes (after
    maybe_convert_prompt), recomputed with the same calls."""
    embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False, clip_skip=clip_skip)
    converted = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    ids = pipe.tokenizer(converted, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return ids.numpy().astype(np.int64), embeds.numpy()


def compare(label: str, got: np.ndarray, want: np.ndarray) -> dict:
    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
    scale = np.abs(want.astype(np.float64)).max()
    res = {"max_abs": float(d.max()), "max_rel": float(d.max() / scale)}
    print(f"  {label}: max abs {res['max_abs']:.3g}, rel {res['max_rel']:.3g}")
    return res


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def derived_seed(label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{mg.SEED}/{label}".encode()).digest()[:4], "little")


def print_tokens(name: str, prompt: str, ch: Chunks, tok: ClipTokenizer, table: EmbeddingTable) -> None:
    names = {}
    for emb in table.embeddings:
        for j, i in enumerate(emb.ids):
            names[i] = f"{emb.trigger}[{j}]"
    print(f"\ntoken by token, {name} ({len(ch.ids)} chunks, token_count {ch.token_count}):\n  prompt: {prompt}")
    for k, (ids, ws) in enumerate(zip(ch.ids, ch.weights)):
        print(f"  chunk {k}:")
        n = len(content(ids))
        for pos, (i, w) in enumerate(zip(ids, ws)):
            label = names.get(i) or tok.token(i)
            if n + 1 < pos < CHUNK + 1:
                continue
            if pos == n + 1 and n < CHUNK:
                label = f"{label} x{CHUNK + 1 - n} (padding to {CHUNK + 1})"
            print(f"    {k}:{pos:2d} {i:5d} {label:40s} {float(np.float32(w)):.9g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=Path("target/fixtures"))
    parser.add_argument("--goldens", type=Path, default=Path("tests/goldens"),
                        help="where personalized_v2.npz (the loop check) is read")
    parser.add_argument("--out", type=Path, default=Path("tests/goldens/prompts.npz"))
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER_JSON)
    args = parser.parse_args()

    t_start = time.time()
    torch.manual_seed(mg.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.set_grad_enabled(False)
    import diffusers
    import tokenizers
    import transformers

    packages = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "numpy": np.__version__}
    print(f"packages: {packages}")
    check_parser_doc_examples()

    fx = mg.Fixtures(args.fixtures)
    fx.check_manifest()
    tok = ClipTokenizer(args.tokenizer)
    width = fx.arch["text_encoder"]["hidden_size"]
    layers = fx.arch["text_encoder"]["num_hidden_layers"]
    embeddings = []
    for file, trigger in EMBEDDINGS:
        vectors, dtype = read_embedding(fx.path(f"embeddings/{file}"))
        assert vectors.shape[0] == EXPECTED_VECTORS[trigger], (file, vectors.shape)
        embeddings.append(Embedding(file, trigger, vectors, dtype))
    table = EmbeddingTable(embeddings, tok, width)
    for e in embeddings:
        print(f"  embeddings/{e.file}: {e.vectors.shape[0]} x {e.vectors.shape[1]} {e.stored_dtype}, trigger {e.trigger!r} "
              f"= tokens {list(e.trigger_ids)}, ids {e.ids}")
    quirk = check_quirk_detected(tok, table)
    print(f"  A1111 quirk detected and refused: {quirk}")

    print("loading the personalized model")
    image = mg.load_image_model(fx, "personalized.safetensors", torch.float16)
    te = TextEncoder(image.text_encoder, table)
    fixture_files = ["arch.json", "fixtures.json", "personalized.safetensors", *[f"embeddings/{f}" for f, _ in EMBEDDINGS]]

    arrays: dict[str, np.ndarray] = {}
    entries: list[dict] = []
    results: dict[str, Encoded] = {}

    def store(case: Case, segments, enc: Encoded | None, extra: dict | None = None) -> None:
        entry = {"name": case.name, "group": case.group, "prompt": case.prompt, "syntax": case.syntax,
                 "clip_skip": case.clip_skip, "error": case.error, "note": case.note,
                 "segments": [[t, w] for t, w in segments] if segments is not None else None}
        entry.update(extra or {})
        entries.append(entry)
        if enc is not None:
            arrays[f"{case.name}__ids"] = enc.ids
            arrays[f"{case.name}__weights"] = enc.weights
            arrays[f"{case.name}__token_count"] = np.array(enc.token_count, dtype=np.int64)
            arrays[f"{case.name}__hidden"] = enc.hidden
            arrays[f"{case.name}__cond"] = enc.cond
            results[case.name] = enc

    print("\n=== a1111")
    for case in a1111_cases():
        try:
            segments = parse_a1111(case.prompt)
        except PromptError as e:
            assert case.error, (case.name, e)
            print(f"  {case.name} error: {e}")
            store(case, None, None, {"error_message": str(e)})
            continue
        assert not case.error, f"{case.name}: expected A1111 to raise"
        chunks = chunk_a1111(segments, tok, table)
        if case.expect is not None:
            case.expect(chunks, tok)
        enc = encode(chunks, te, case.clip_skip, emphasis=True)
        store(case, segments, enc)
        print(f"  {case.name} skip {case.clip_skip} chunks {len(chunks.ids)} count {chunks.token_count:3d} "
              f"weights {sorted({round(float(w), 4) for ws in chunks.weights for w in ws})} | {case.prompt[:60]!r}")
        if case.prompt == CASTLE_200:
            printed = (case.name, chunks)

    print("\n=== plain")
    for case in plain_cases():
        chunks = chunk_plain(case.prompt, tok, table)
        enc = encode(chunks, te, case.clip_skip, emphasis=False)
        store(case, [(case.prompt, 1.0)], enc)
        print(f"  {case.name} skip {case.clip_skip} count {chunks.token_count:3d} | {case.prompt[:60]!r}")

    print("\n=== diffusers")
    dtok = diffusers_tokenizer(args.tokenizer)
    for case in [*a1111_cases(), *plain_cases()]:
        if not case.error and case.syntax == "plain":
            assert dtok(case.prompt, add_special_tokens=False)["input_ids"] == tok.encode(case.prompt), case.name
    checks: dict[str, dict] = {}
    pipe = make_pipeline(fx, image, copy.deepcopy(image.text_encoder), dtok)
    ti_pipe = make_pipeline(fx, image, copy.deepcopy(image.text_encoder), diffusers_tokenizer(args.tokenizer))
    # Files as paths, except the SDXL-style clipl.safetensors (clip_l + clip_g), which diffusers
    # refuses as a file: its documented way is to pass the state dict's clip_l tensor.
    sources = []
    for f, _ in EMBEDDINGS:
        path = fx.path(f"embeddings/{f}")
        sd = load_file(path) if path.suffix == ".safetensors" else {}
        sources.append(sd["clip_l"] if "clip_g" in sd else str(path))
    ti_pipe.load_textual_inversion(sources, token=[t for _, t in EMBEDDINGS])
    d_rows = [
        (pipe, "a photo of a red fox in the snow, (detailed:1.2)", None, "encode_prompt, clip_skip None (A1111 N 1)"),
        (pipe, "a photo of a red fox in the snow, (detailed:1.2)", 1, "encode_prompt, clip_skip 1 (A1111 N 2)"),
        (ti_pipe, "easyneg, mystyle, clipl, a cat and a <toy>", None, "load_textual_inversion of the four files, clip_skip None"),
        (ti_pipe, "easyneg, mystyle, clipl, a cat and a <toy>", 1, "load_textual_inversion of the four files, clip_skip 1"),
    ]
    for i, (p, prompt, c, note) in enumerate(d_rows):
        name = f"d{i:02d}"
        n = 1 if c is None else c + 1
        ids, cond = diffusers_encode(p, prompt, c)
        mine = encode(chunk_plain(prompt, tok, table), te, n, emphasis=False)
        same_ids = bool(np.array_equal(ids, mine.ids))
        if p is pipe:
            assert same_ids, (ids, mine.ids)
        res = compare(f"{name} diffusers (clip_skip {c}) vs plain implementation (N {n}); ids equal: {same_ids}",
                      cond, mine.cond)
        assert res["max_rel"] <= 1e-6, res
        res["ids_equal"] = same_ids
        checks[name] = res
        case = Case(name, prompt, n, note, syntax="plain", group="diffusers")
        entries.append({"name": name, "group": "diffusers", "prompt": prompt, "syntax": "plain", "clip_skip": n,
                        "diffusers_clip_skip": c, "error": False, "note": note, "segments": None,
                        "compared_with": "plain implementation", "max_abs": res["max_abs"], "max_rel": res["max_rel"],
                        "ids_equal": same_ids})
        arrays[f"{name}__ids"] = ids
        arrays[f"{name}__cond"] = cond
        del case

    print("\n=== loop")
    golden_path = args.goldens / "personalized_v2.npz"
    golden = np.load(golden_path)
    golden_meta = json.loads(bytes(golden["meta"]).decode("utf-8"))
    for f, sha in golden_meta["fixture_sha256"].items():
        assert fx.sha256(f) == sha, f"{f}: fixture differs from the one {golden_path} was made from"
    mm = mg.load_motion_module(fx, "v2")
    unet = mg.build_unet(fx, image, mm)
    fixture_files += ["mm_v2.ckpt", "mm_v2.safetensors"]
    scheduler = mg.make_scheduler()
    old_ctx = torch.cat([mg.encode_text(image.text_encoder, torch.from_numpy(golden["ddim_uncond_ids"])),
                         mg.encode_text(image.text_encoder, torch.from_numpy(golden["ddim_cond_ids"]))])
    old = mg.ddim_sample(unet, scheduler, old_ctx, torch.from_numpy(golden["ddim_init_latents"]), GUIDANCE).numpy()
    d_old = float(np.abs(old.astype(np.float64) - golden["ddim_final_latents"]).max())
    print(f"  the 77-token context reproduces {golden_path.name} ddim_final_latents: max abs diff {d_old:.3g}")
    assert d_old == 0.0, d_old

    cond_chunks = chunk_a1111(parse_a1111(LOOP_PROMPT), tok, table)
    uncond_chunks = chunk_a1111(parse_a1111(LOOP_NEGATIVE), tok, table)
    empty_chunks = chunk_a1111(parse_a1111(""), tok, table)
    cond = encode(cond_chunks, te, LOOP_CLIP_SKIP, emphasis=True)
    uncond = encode(uncond_chunks, te, LOOP_CLIP_SKIP, emphasis=True)
    empty = encode(empty_chunks, te, LOOP_CLIP_SKIP, emphasis=True)
    assert cond.cond.shape[1] == 2 * 77 and uncond.cond.shape[1] == 77 and empty.cond.shape[1] == 77
    # pad_cond_uncond: whole empty-prompt chunks appended to the shorter one
    repeats = (cond.cond.shape[1] - uncond.cond.shape[1]) // empty.cond.shape[1]
    uncond_padded = torch.hstack([torch.from_numpy(uncond.cond), torch.from_numpy(empty.cond).repeat(1, repeats, 1)])
    context = torch.cat([uncond_padded, torch.from_numpy(cond.cond)])
    init = np.random.default_rng(derived_seed("loop")).standard_normal((1, 4, mg.NUM_FRAMES, mg.LATENT_SIZE, mg.LATENT_SIZE),
                                                                       dtype=np.float32)
    trace: list = []
    final = mg.ddim_sample(unet, scheduler, context, torch.from_numpy(init), GUIDANCE, trace).numpy()
    for t, sd_u, sd_d, eps_max, x_max, x_sd in trace:
        print(f"  DDIM t={t:3d}: std eps_u {sd_u:.3g}, std (eps_c-eps_u) {sd_d:.3g} -> max|x| {x_max:.3g} std x {x_sd:.3g}")
    # the weights and the second chunk must matter
    flat = mg.ddim_sample(unet, scheduler, torch.cat([uncond_padded[:, :77], torch.from_numpy(cond.hidden[:1])]),
                          torch.from_numpy(init), GUIDANCE).numpy()
    print(f"  vs one unweighted cond chunk: final latents differ by max {np.abs(final - flat).max():.3g}")
    assert np.abs(final - flat).max() > 1e-3
    arrays["loop__cond_ids"] = cond.ids
    arrays["loop__cond_weights"] = cond.weights
    arrays["loop__uncond_ids"] = np.concatenate([uncond.ids, np.repeat(empty.ids, repeats, axis=0)])
    arrays["loop__uncond_weights"] = np.concatenate([uncond.weights, np.repeat(empty.weights, repeats, axis=0)])
    arrays["loop__context"] = context.numpy()
    arrays["loop__init_latents"] = init
    arrays["loop__timesteps"] = scheduler.timesteps.numpy().astype(np.int64)
    arrays["loop__guidance"] = np.array(GUIDANCE, dtype=np.float32)
    arrays["loop__clip_skip"] = np.array(LOOP_CLIP_SKIP, dtype=np.int64)
    arrays["loop__final_latents"] = final
    entries.append({"name": "loop", "group": "loop", "prompt": LOOP_PROMPT, "negative_prompt": LOOP_NEGATIVE,
                    "syntax": "a1111", "clip_skip": LOOP_CLIP_SKIP, "error": False,
                    "note": "4-step DDIM, guidance 7.5, personalized_v2; uncond = negative chunk + empty-prompt chunk",
                    "segments": [[t, w] for t, w in parse_a1111(LOOP_PROMPT)],
                    "negative_segments": [[t, w] for t, w in parse_a1111(LOOP_NEGATIVE)]})

    print_tokens(printed[0], CASTLE_200, printed[1], tok, table)

    meta = {
        "tool": TOOL,
        "packages": packages,
        "fixture_sha256": {f: fx.sha256(f) for f in fixture_files},
        "tokenizer": {"path": str(args.tokenizer.relative_to(REPO)) if args.tokenizer.is_relative_to(REPO) else str(args.tokenizer),
                      "sha256": mg.sha256_of(args.tokenizer)},
        "text_encoder": "personalized.safetensors (make_goldens.py load_image_model), CLIPTextModel eager, no attention mask",
        "embeddings": [{"file": f"embeddings/{e.file}", "trigger": e.trigger, "trigger_ids": list(e.trigger_ids),
                        "ids": e.ids, "vectors": int(e.vectors.shape[0]), "stored_dtype": e.stored_dtype}
                       for e in embeddings],
        "a1111": {"source": "AUTOMATIC1111/stable-diffusion-webui master: modules/prompt_parser.py, modules/sd_hijack_clip.py, "
                            "modules/sd_emphasis.py, modules/sd_hijack.py, modules/textual_inversion/textual_inversion.py, "
                            "modules/sd_samplers_cfg_denoiser.py",
                  "emphasis": "Original", "comma_padding_backtrack": BACKTRACK, "chunk_length": CHUNK,
                  "round_multiplier": ROUND_MULT, "square_multiplier": SQUARE_MULT,
                  "refused_quirk": quirk},
        "clip_skip": "A1111 numbering: 1 = last_hidden_state, N > 1 = final_layer_norm(hidden_states[-N]); diffusers clip_skip = N - 1",
        "text_encoder_layers": layers,
        "diffusers_checks": checks,
        "loop": {"seed": derived_seed("loop"), "guidance": GUIDANCE, "clip_skip": LOOP_CLIP_SKIP,
                 "scheduler": "make_goldens.make_scheduler (official DDIM, 4 steps, eta 0)",
                 "model": "personalized_v2 (make_goldens.build_unet)", "pad_repeats": repeats,
                 "check_77_token_context_max_abs": d_old},
    }
    arrays["cases"] = np.frombuffer(json.dumps(entries, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    for k, a in arrays.items():
        assert a.flags["C_CONTIGUOUS"], k
        if a.dtype == np.float32:
            assert np.isfinite(a).all(), k
        assert a.dtype in (np.float32, np.int64, np.uint8), (k, a.dtype)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)  # stored (uncompressed): ndarray-npy's plain npz reader
    n_cases = {g: sum(1 for e in entries if e["group"] == g) for g in ("a1111", "plain", "diffusers", "loop")}
    print(f"\nwrote {args.out} ({args.out.stat().st_size} bytes, {len(arrays)} arrays; cases {n_cases}, "
          f"errors {sum(e['error'] for e in entries)}) in {time.time() - t_start:.1f} s")
    if fx.findings:
        print("fixture findings:\n" + "\n".join(f"  - {f}" for f in fx.findings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
