#!/usr/bin/env python3
"""Reference goldens for long videos (issue 19): diffusers' FreeNoise, sampler-level context windows
(AnimateDiff-Evolved's "standard static" schedule), and prompt travel.

    tools/reference/.venv/bin/python tools/reference/context_goldens.py \
        --fixtures target/fixtures --out tests/goldens/context.npz

Writes one uncompressed npz (array names `{case}__{array}`; list in tools/reference/README.md).
Models: the `personalized_v2` and `personalized_v1` fixture models of make_goldens.py (its loaders
and official-semantics adjustments: per-frame motion-module GroupNorm, v1 cross-frame ResNet norms
with the FrameCount hook, formula positional encoding, AttnProcessor). Scheduler
`make_goldens.make_scheduler()` (DDIM, linear betas, leading, steps_offset 1, eta 0), 4 steps,
guidance 7.5, 64x64 px (8x8 latents), negative prompt "". Deterministic: same fixtures and
packages => byte-identical file.

Cases
-----
* `freenoise_v2_40` (pyramid), `freenoise_v1_48` (flat), `freenoise_v2_44` (pyramid, incomplete
  last window: the only case where the counter quirk below shows): diffusers' own
  `AnimateDiffPipeline.__call__` with `enable_free_noise(context_length=16, context_stride=12,
  weighting_scheme=..., noise_type="shuffle_context")` around the patched models.
* `uniform_v2_40` (pyramid), `uniform_v1_48` (flat): sampler-level context windows, this file's own
  loop (below).
* `travel_v2_40`: FreeNoise as `freenoise_v2_40` with prompt {0: p0, 16: p1, 32: p2};
  `travel_uniform_v2_40`: the per-frame embeddings diffusers built, through the uniform loop.

How FreeNoise is set up here
----------------------------
`enable_free_noise` replaces every motion-module `BasicTransformerBlock` by a
`FreeNoiseTransformerBlock` built with `positional_embeddings="sinusoidal"` and loads the old block's
`state_dict()` strictly. make_goldens' `TemporalPositionalEncoding` keeps its table as a
non-persistent buffer, so the strict load would fail; just before enabling, every block's pos_embed
is swapped for a diffusers `SinusoidalPositionalEmbedding` (same formula, asserted equal to ours),
and right after enabling the new blocks' pos_embed is replaced by `TemporalPositionalEncoding` again
and `AttnProcessor` is set on every attention (the new blocks' attentions come with the default
SDPA processor). Asserted afterwards: every motion block is a FreeNoiseTransformerBlock with our
positional encoding, every motion-module norm is still PerFrameGroupNorm, v1's ResNet/out norms are
still CrossFrameGroupNorm (FrameCount hook in place), every processor is AttnProcessor, and with one
window covering all frames (16 frames) the FreeNoise UNet equals the plain patched UNet.

diffusers 0.42.1 FreeNoise, exactly (installed source, line numbers of that file)
------------------------------------------------------------------------------
F = frames, L = context_length (16), S = context_stride (12), all 0-based.

A. Latents: `AnimateDiffFreeNoiseMixin._prepare_latents_free_noise`,
   diffusers/pipelines/free_noise_utils.py lines 356-428, called from
   `AnimateDiffPipeline.prepare_latents` (pipelines/animatediff/pipeline_animatediff.py 512-542,
   which then multiplies by init_noise_sigma = 1 for DDIM).
   * 374-376: `context_num_frames = L if L == "repeat_context" else F` compares the length with a
     string (always false): the noise is always drawn for all F frames.
   * 387: `randn_tensor((B, 4, F, H/8, W/8), generator)` = `torch.randn(shape, generator=g)` on the
     CPU generator: one randn call for the whole [1,4,F,8,8] (frames F..: drawn, then overwritten).
   * 399-421 ("shuffle_context"): `for i in range(L, F, S)`: `ws = max(0, i - L)`,
     `we = min(F, ws + S)`, `n = we - ws` (break if 0; with S <= L it is S), `p = torch.randperm(n,
     generator=g)` (a full randperm(n) is drawn even when fewer frames are needed), source frames
     `ws + p`, destination `i .. min(F, i + n)`; when the destination is cut by F only the first
     `min(F, i+n) - i` entries of `ws + p` are used (417-421). Assignments happen in loop order on
     the same tensor, so later sources include earlier shuffled copies (i=28 reads 12..23, of which
     16..23 were written at i=16). Generator calls in order: randn(4·F·64), then randperm(S) per
     loop iteration. Frames 0..L-1 keep their randn values. 427: `latents[:, :, :F]`.
     F=40: i = 16, 28 (2 perms); F=44: 16, 28, 40 (3 perms, last uses 4 of 12); F=48: 16, 28, 40
     (3 perms, last uses 8 of 12).
   * torch.randperm(n, generator) on the CPU (ATen TensorFactories.cpp `randperm_cpu`): r = 0..n-1;
     for i in 0..n-2: z = (next 32-bit mt19937 output) % (n - i); swap r[i], r[i+z]. Checked here
     with numpy's MT19937 (legacy seeding = torch's manual_seed for seeds < 2^32): the randperms
     use the raw outputs that follow the 4·F·64 outputs consumed by the randn (one per value, as
     F·256 is a multiple of 16), n-1 outputs per randperm (asserted).

B. Windows and fusion inside every motion-module transformer block:
   `FreeNoiseTransformerBlock.forward`, diffusers/models/attention.py lines 1556-1679 (class at 1335).
   Input (B·H·W, F, C) after the motion module's GroupNorm and proj_in (which run on all F frames).
   * 1504-1510 `_get_frame_indices`: `for i in range(0, F - L + 1, S): (i, min(F, i + L))`: only
     full windows. 1580-1589: if the last window does not end at F (and F >= L, else ValueError),
     `last_len = F - last_end` (last_end = end of the last full window) and the window
     (F - L, F) is appended. F=40: (0,16) (12,28) (24,40), complete. F=44: (0,16) (12,28) (24,40)
     + (28,44), last_len 4. F=48: (0,16) (12,28) (24,40) + (32,48), last_len 8.
   * 1512-1542 `_get_frame_weights(L, scheme)`: flat [1]*L; pyramid, L even: [1..L/2, L/2..1]
     (L=16: 1,2,...,8,8,...,2,1), L odd: [1..m-1, m, m-1..1] with m=(L+1)/2;
     delayed_reverse_sawtooth L even [0.01]*(L/2-1) + [L/2] + [L/2..1]. float32 tensor (1578-1579).
   * 1591-1592: counter zeros (1, F, 1) float32, accumulator zeros like the input.
   * 1594-1643, per window in order: chunk = h[:, s:e]; chunk = attn1(pos(norm1(chunk))) + chunk
     (1605-1617); chunk = attn2(pos(norm2(chunk))) + chunk (1622-1634; attn2 is the motion
     module's second self-attention, encoder_hidden_states is None there). The positional
     encoding is applied per window, positions 0..L-1 relative to the window start (pos_embed adds
     pe[:, :L] to the window's LayerNorm output, before q/k/v, in both attentions).
     - Full windows (1641-1643): acc[:, s:e] += chunk * w; cnt[s:e] += w (w the L weights).
     - The appended incomplete last window (1636-1640): only its last `last_len` frames are
       accumulated: acc[:, F-last_len:] += chunk[:, -last_len:] * w[-last_len:], but
       `cnt[F-last_len:] += w[:, -last_len]` indexes ONE weight (no slice): every one of those frames
       gets the counter increment w[L - last_len]. With flat weights this is harmless; with pyramid
       (F=44: w[12] = 4 for frames 40..43, while the values carry 4,3,2,1 and no other window covers
       them) those frames come out scaled by w[L-last_len+j] / w[L-last_len] = 1, .75, .5, .25.
       The appended window's other frames (F-L .. F-last_len-1) are computed and dropped.
   * 1656-1665: h = acc / cnt (torch.where(cnt > 0, ...), split into L-frame pieces along F, which
     is elementwise the same division; cnt > 0 everywhere when F >= L).
   * 1667-1675: FEED-FORWARD AFTER THE FUSION: h = ff(norm3(h)) + h on all F frames. So the fusion
     sits after the two attentions and before the FF; proj_out, the residual and everything outside
     the motion-module transformer block run on all F frames at once (for v1 the cross-frame ResNet
     GroupNorm therefore takes its statistics over all F frames).
   * Accumulation order matters for bit-exactness: windows in list order, acc starts at 0, so a
     frame covered once gets exactly chunk·w, a frame covered twice (chunk₁·w₁ + chunk₂·w₂) in
     window order; then / cnt (float32).

C. Prompts: `_encode_prompt_free_noise`, free_noise_utils.py 256-354, called from
   `AnimateDiffPipeline.__call__` (pipeline_animatediff.py 733-745) instead of encode_prompt.
   * 269-276: negative None -> ""; a str prompt/negative becomes {0: text}.
   * 278 -> `_check_inputs_free_noise` 220-254: prompt keys must be ints, values str, min key must be
     0 (249-250: "a starting prompt is necessary"), max key < F (251-254); prompt_embeds /
     negative_prompt_embeds are refused (237-238). The NEGATIVE dict's keys are not checked (a
     negative dict without key 0 leaves zero rows before its first key, from new_zeros).
   * 281-286: both dicts sorted by key; then `d[F-1] = d[last key]`: after the last keyframe the
     prompt is held to the end (as an extra keyframe at F-1; if the last key is F-1 already it is
     unchanged).
   * 294-304: all keyframe prompts encoded in ONE batched encode_prompt call (no CFG); 306-307
     rows = zeros [F, 77, D]; 309-317: for each consecutive pair (k_i, k_i+1):
     rows[k_i ..= k_i+1] = _lerp(k_i, k_i+1, e_i, e_i+1): the end frame is written too and then
     overwritten by the next pair's alpha = 0 row (same keyframe embedding, exact).
   * `_lerp` 430-442: n = k_end - k_start + 1; for j in 0..n-1: alpha = j / (n - 1) (Python float
     division), row = (1 - alpha) * e_start + alpha * e_end: two float32 tensor-scalar products
     (the Python scalars become float32) and one float32 add. With a single prompt the rows are
     lerps of two identical embeddings, which are not always bit-identical to the embedding
     (rounding); keyframe rows are exact.
   * 319-346: negative: `encode_prompt([""] * k, do_classifier_free_guidance=True,
     negative_prompt=[negatives])`, the negative embeddings interpolated the same way over the
     negative keyframes (default {0: "", F-1: ""}).
   * 351-352: returns cat([negative rows, prompt rows]) ([2F, 77, D], frame rows per batch item,
     uncond first) — the UNet's encoder_hidden_states as is (no repeat_interleave in FreeNoise
     mode) — and the negative rows.
   * Guidance and DDIM as in the plain pipeline (pipeline_animatediff.py 820-835): UNet on
     cat([x, x]) (all F frames), eps = u + 7.5 (c - u), scheduler.step(eps, t, x, eta=0,
     generator=g) (DDIM draws no noise at eta 0).

Sampler-level context windows ("uniform" cases)
------------------------------------------------
Written from the documented behaviour of Kosinkadink/ComfyUI-AnimateDiff-Evolved (read at commit
0542cd97c344c987e897b0f62456ae40fc504939): animatediff/context.py `create_windows_static_standard`
("standard_static" schedule), `create_weights_flat` / `create_weights_pyramid` (via
`get_context_weights`), and animatediff/sampling.py `sliding_calc_conds_batch` (weighted sum and
count per frame, then division). Schedule: delta = L - overlap = 12; windows start at 0, 12, 24, ...;
the first window with start + L >= F is moved back to start F - L and is the last one. F=40: [0,16)
[12,28) [24,40); F=48: [0,16) [12,28) [24,40) [32,48). Weights: the same flat / pyramid lists as
FreeNoise's (16: 1..8, 8..1). Every step, for each window (in order): the patched UNet (no FreeNoise)
on cat([x_w, x_w]) (the window's 16 frames) with timestep t and encoder_hidden_states =
cat([uncond rows of the window's frames, cond rows of the window's frames]) ((b f) order);
eps_w = u + 7.5 (c - u); value[f] += eps_w[f] · w_i, counter[f] += w_i (float32); then eps = value /
counter and one DDIM step on all F frames. AnimateDiff-Evolved fuses cond and uncond separately and
applies CFG afterwards; as CFG is linear this is the same up to rounding. The positional encoding,
v1's cross-frame GroupNorm etc. all see 16-frame windows only.

Deterministic; tools only, never in CI: the golden is committed.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402
import prompt_goldens as pg  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import AnimateDiffPipeline, MotionAdapter  # noqa: E402
from diffusers.models.attention import FreeNoiseTransformerBlock  # noqa: E402
from diffusers.models.attention_processor import AttnProcessor  # noqa: E402
from diffusers.models.embeddings import SinusoidalPositionalEmbedding  # noqa: E402
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D  # noqa: E402

TOOL = "tools/reference/context_goldens.py"
CONTEXT_LENGTH = 16
FREENOISE_STRIDE = 12
UNIFORM_OVERLAP = 4
GUIDANCE = 7.5
STEPS = mg.DDIM_STEPS
HEIGHT = WIDTH = 64
NEGATIVE = ""
PROMPT = "a photo of a red fox running in the snow"
TRAVEL = {0: "a red fox running in the snow", 16: "a blue whale swimming in the deep ocean",
          32: "a yellow car driving on a desert road at sunset"}

# name: (motion version, frames, weighting scheme)
FREENOISE_CASES = {"freenoise_v2_40": ("v2", 40, "pyramid"), "freenoise_v1_48": ("v1", 48, "flat"),
                   "freenoise_v2_44": ("v2", 44, "pyramid")}
UNIFORM_CASES = {"uniform_v2_40": ("v2", 40, "pyramid"), "uniform_v1_48": ("v1", 48, "flat")}
TRAVEL_FRAMES = 40

SOURCES = {
    "diffusers": {
        "version": "0.42.1",
        "pipelines/free_noise_utils.py": {
            "AnimateDiffFreeNoiseMixin._enable_free_noise_in_block": "148-187",
            "_check_inputs_free_noise": "220-254",
            "_encode_prompt_free_noise": "256-354",
            "_prepare_latents_free_noise": "356-428",
            "_lerp": "430-442",
            "enable_free_noise": "444-517",
        },
        "models/attention.py": {
            "FreeNoiseTransformerBlock": "1335",
            "_get_frame_indices": "1504-1510",
            "_get_frame_weights": "1512-1542",
            "forward": "1556-1679 (windows 1577-1589, accumulation 1594-1643, incomplete last window "
                       "1636-1640, division 1656-1665, feed-forward 1667-1675)",
        },
        "pipelines/animatediff/pipeline_animatediff.py": {
            "prepare_latents": "512-542", "__call__ FreeNoise prompt": "733-745", "denoising loop": "820-835"},
    },
    "animatediff_evolved": {
        "repo": "Kosinkadink/ComfyUI-AnimateDiff-Evolved", "commit": "0542cd97c344c987e897b0f62456ae40fc504939",
        "animatediff/context.py": ["create_windows_static_standard", "get_context_weights", "create_weights_flat",
                                   "create_weights_pyramid"],
        "animatediff/sampling.py": ["sliding_calc_conds_batch"],
    },
    "pytorch": "aten/src/ATen/native/TensorFactories.cpp randperm_cpu (z = random() % (n - i), swap r[i], r[i+z])",
}


def derived_seed(label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{mg.SEED}/context/{label}".encode()).digest()[:4], "little")


def max_abs(a, b) -> float:
    a = a.detach().double() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a)).double()
    b = b.detach().double() if isinstance(b, torch.Tensor) else torch.from_numpy(np.asarray(b)).double()
    return float((a - b).abs().max())


# ----------------------------------------------------------------------------------------------
# FreeNoise, written out from the description in the module docstring (checked against diffusers)
# ----------------------------------------------------------------------------------------------


def freenoise_windows(frames: int, length: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first accumulated frame) of every window FreeNoiseTransformerBlock uses."""
    if frames < length:
        raise ValueError("FreeNoise needs at least context_length frames")
    windows = [(s, s + length, s) for s in range(0, frames - length + 1, stride)]
    last_end = windows[-1][1]
    if last_end != frames:
        windows.append((frames - length, frames, last_end))
    return windows


def freenoise_weights(length: int, scheme: str) -> list[float]:
    if scheme == "flat":
        return [1.0] * length
    if scheme == "pyramid":
        if length % 2 == 0:
            m = length // 2
            return [float(x) for x in [*range(1, m + 1), *range(m, 0, -1)]]
        m = (length + 1) // 2
        return [float(x) for x in [*range(1, m), m, *range(m - 1, 0, -1)]]
    raise ValueError(scheme)


def freenoise_counts(frames: int, length: int, stride: int, scheme: str) -> np.ndarray:
    """The counter after the window loop, with diffusers' one-weight increment for the appended
    window (float32, accumulated in window order)."""
    w = np.array(freenoise_weights(length, scheme), dtype=np.float32)
    cnt = np.zeros(frames, dtype=np.float32)
    for s, e, first in freenoise_windows(frames, length, stride):
        if first == s:
            cnt[s:e] += w
        else:
            k = e - first
            cnt[first:e] += w[length - k]
    return cnt


@torch.no_grad()
def reference_freenoise_block(block, h: torch.Tensor, length: int, stride: int, scheme: str) -> torch.Tensor:
    """FreeNoiseTransformerBlock.forward as the docstring describes it, on (B·H·W, F, C)."""
    frames = h.shape[1]
    w = torch.tensor(freenoise_weights(length, scheme), dtype=h.dtype)[None, :, None]
    acc = torch.zeros_like(h)
    cnt = torch.zeros((1, frames, 1))
    for s, e, first in freenoise_windows(frames, length, stride):
        x = h[:, s:e]
        x = block.attn1(block.pos_embed(block.norm1(x))) + x
        x = block.attn2(block.pos_embed(block.norm2(x))) + x
        if first == s:
            acc[:, s:e] += x * w
            cnt[:, s:e] += w
        else:
            k = e - first
            acc[:, first:e] += x[:, -k:] * w[:, -k:]
            cnt[:, first:e] += w[:, length - k]
    out = acc / cnt
    return block.ff(block.norm3(out)) + out


def reference_shuffled_latents(seed: int, shape: tuple, length: int, stride: int) -> tuple[torch.Tensor, list]:
    """_prepare_latents_free_noise's noise, written out: randn, then the shuffle_context loop."""
    g = torch.Generator("cpu").manual_seed(seed)
    lat = torch.randn(shape, generator=g)
    frames = shape[2]
    perms = []
    for i in range(length, frames, stride):
        ws = max(0, i - length)
        we = min(frames, ws + stride)
        n = we - ws
        if n == 0:
            break
        p = torch.randperm(n, generator=g)
        perms.append(p)
        end = min(frames, i + n)
        lat[:, :, i:end] = lat[:, :, (ws + p)[: end - i]]
    return lat, perms


def check_randperm_mt19937(seed: int, randn_count: int, perms: list) -> None:
    """torch.randperm(n, g) = Fisher-Yates with z = (32-bit mt19937 output) % (n - i), on the
    outputs that follow the randn's (one output per value)."""
    raw = np.random.RandomState(seed)._bit_generator.random_raw(randn_count + sum(len(p) for p in perms))
    pos = randn_count
    for p in perms:
        n = len(p)
        r = list(range(n))
        for i in range(n - 1):
            z = int(raw[pos]) % (n - i)
            pos += 1
            r[i], r[i + z] = r[i + z], r[i]
        assert r == p.tolist(), (r, p.tolist())


def check_freenoise_blocks(unet, length: int, stride: int) -> str:
    """Our written-out block against diffusers' FreeNoiseTransformerBlock, several frame counts and
    schemes (pyramid with an incomplete last window shows the counter quirk)."""
    block = next(m for m in unet.modules() if isinstance(m, FreeNoiseTransformerBlock))
    saved = (block.context_length, block.context_stride, block.weighting_scheme)
    g = torch.Generator().manual_seed(mg.SEED + 19)
    worst = 0.0
    lines = []
    try:
        for frames in (16, 25, 40, 44, 48):
            for scheme in ("flat", "pyramid"):
                block.set_free_noise_properties(length, stride, scheme)
                h = torch.randn(6, frames, block.dim, generator=g)
                got = block(h)
                want = reference_freenoise_block(block, h, length, stride, scheme)
                d = max_abs(got, want)
                worst = max(worst, d)
                assert d < 1e-5, (frames, scheme, d)
        # the quirk: pyramid, 44 frames, frames 40..43 come out of the appended window scaled
        block.set_free_noise_properties(length, stride, "pyramid")
        cnt = freenoise_counts(44, length, stride, "pyramid")
        lines.append(f"pyramid 44 frames counter {cnt[36:].tolist()} (frames 36..43)")
    finally:
        block.set_free_noise_properties(*saved)
    return f"written-out FreeNoise block vs diffusers (F 16/25/40/44/48 x flat/pyramid): max abs {worst:.3g}; " + "; ".join(lines)


# ----------------------------------------------------------------------------------------------
# Sampler-level context windows
# ----------------------------------------------------------------------------------------------


def static_standard_windows(frames: int, length: int, overlap: int) -> list[list[int]]:
    if frames <= length:
        return [list(range(frames))]
    windows = []
    for start in range(0, frames, length - overlap):
        if start + length >= frames:
            windows.append(list(range(frames - length, frames)))
            break
        windows.append(list(range(start, start + length)))
    return windows


@torch.no_grad()
def uniform_sample(unet, cond_rows: torch.Tensor, uncond_rows: torch.Tensor, init: torch.Tensor,
                   windows: list[list[int]], weights: list[float], trace: dict | None = None) -> torch.Tensor:
    """cond_rows / uncond_rows: [F, 77, D] per-frame context. Returns the final latents."""
    scheduler = mg.make_scheduler()
    x = init.clone() * scheduler.init_noise_sigma
    frames = x.shape[2]
    w = torch.tensor(weights, dtype=torch.float32)
    for step, t in enumerate(scheduler.timesteps):
        value = torch.zeros_like(x)
        count = torch.zeros(frames, dtype=torch.float32)
        per_window = []
        for idx in windows:
            ix = torch.tensor(idx)
            xw = x[:, :, ix]
            ctx = torch.cat([uncond_rows[ix], cond_rows[ix]])
            eps = unet(torch.cat([xw, xw]), t, encoder_hidden_states=ctx).sample
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + GUIDANCE * (eps_c - eps_u)
            per_window.append(eps)
            value[:, :, ix] += eps * w[None, None, :, None, None]
            count[ix] += w
        eps = value / count[None, None, :, None, None]
        if step == 0 and trace is not None:
            trace["eps_step0_windows"] = torch.stack(per_window).numpy()
            trace["eps_step0"] = eps.numpy()
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x


# ----------------------------------------------------------------------------------------------
# The FreeNoise pipeline around the patched models
# ----------------------------------------------------------------------------------------------


def motion_blocks(unet):
    for module in unet.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            yield from module.transformer_blocks


def make_freenoise_pipeline(fx, image, mm, text_encoder, tokenizer, scheme: str):
    unet = mg.build_unet(fx, image, mm)
    adapter = MotionAdapter(**mg.motion_adapter_config(fx.arch, mm.max_len, mm.has_mid))
    pipe = AnimateDiffPipeline(vae=image.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               motion_adapter=adapter, scheduler=mg.make_scheduler())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae_scale_factor == 8, pipe.vae_scale_factor
    # diffusers' FreeNoise block is built with a persistent sinusoidal table and loads strictly
    for block in motion_blocks(unet):
        assert isinstance(block.pos_embed, mg.TemporalPositionalEncoding)
        table = SinusoidalPositionalEmbedding(block.dim, max_seq_length=mm.max_len)
        assert max_abs(table.pe, block.pos_embed.pe) < 1e-6
        block.pos_embed = table
    pipe.enable_free_noise(context_length=CONTEXT_LENGTH, context_stride=FREENOISE_STRIDE,
                           weighting_scheme=scheme, noise_type="shuffle_context")
    n = 0
    for block in motion_blocks(unet):
        assert isinstance(block, FreeNoiseTransformerBlock), type(block)
        assert isinstance(block.pos_embed, SinusoidalPositionalEmbedding)
        assert (block.context_length, block.context_stride, block.weighting_scheme) == (CONTEXT_LENGTH, FREENOISE_STRIDE, scheme)
        block.pos_embed = mg.TemporalPositionalEncoding(block.dim, mm.max_len)
        n += 1
    unet.set_attn_processor(AttnProcessor())
    check_still_official(unet, mm, n)
    return pipe


def check_still_official(unet, mm, n_blocks: int) -> None:
    modules = [m for m in unet.modules() if isinstance(m, AnimateDiffTransformer3D)]
    assert n_blocks == len(modules) == (21 if mm.has_mid else 20), (n_blocks, len(modules))
    assert all(isinstance(m.norm, mg.PerFrameGroupNorm) for m in modules)
    assert all(isinstance(b.pos_embed, mg.TemporalPositionalEncoding) and b.pos_embed.max_len == mm.max_len
               for b in motion_blocks(unet))
    assert all(type(p) is AttnProcessor for p in unet.attn_processors.values())
    assert len(unet._forward_pre_hooks) == 1  # make_goldens' FrameCount hook
    cross = [m for m in unet.modules() if isinstance(m, mg.CrossFrameGroupNorm)]
    if mg.MOTION_VERSION_TRAITS[mm.version][2]:
        assert len(cross) == 2 * 22 + 1 and all(m.frames is unet._frames for m in cross), len(cross)
    else:
        assert not cross


@torch.no_grad()
def check_one_window_equals_plain(fx, image, mm, pipe) -> float:
    """16 frames = one window: the FreeNoise UNet must equal the plain patched UNet."""
    plain = mg.build_unet(fx, image, mm)
    g = torch.Generator().manual_seed(derived_seed(f"one_window/{mm.version}"))
    sample = torch.randn(2, 4, CONTEXT_LENGTH, mg.LATENT_SIZE, mg.LATENT_SIZE, generator=g)
    ctx = torch.randn(2, 77, fx.arch["unet"]["cross_attention_dim"], generator=g)
    t = torch.tensor([751, 251])
    want = mg.unet_forward(plain, sample, t, ctx)
    got = mg.unet_forward(pipe.unet, sample, t, ctx)
    d = max_abs(got, want) / float(want.abs().max())
    assert d < 2e-6, d
    return d


def prompt_ids(tokenizer, ctok: pg.ClipTokenizer, text: str) -> np.ndarray:
    """BOS + tokens + EOS padding to 77, as encode_prompt tokenizes (checked against the product
    tokenizer)."""
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    mine = [mg.BOS] + ctok.encode(text)[:75]
    mine += [mg.EOS] * (77 - len(mine))
    assert ids[0].tolist() == mine, text
    return ids.numpy().astype(np.int64)


@torch.no_grad()
def run_freenoise(pipe, prompt, frames: int, seed: int) -> dict:
    """pipe(...) with the UNet output of step 0, the initial latents, the randperms and the prompt
    rows captured."""
    cap: dict = {"unet_calls": 0}
    orig_prepare = pipe._prepare_latents_free_noise
    orig_encode = pipe._encode_prompt_free_noise

    def prepare(*args, **kwargs):
        out = orig_prepare(*args, **kwargs)
        cap["init_latents"] = out.clone()
        return out

    def encode(*args, **kwargs):
        rows, neg = orig_encode(*args, **kwargs)
        cap["rows"] = rows.clone()
        cap["negative_rows"] = neg.clone()
        return rows, neg

    def pre_hook(_m, args, kwargs):
        if cap["unet_calls"] == 0:
            cap["ehs"] = kwargs["encoder_hidden_states"].clone()
            cap["x0"] = args[0].clone()

    def hook(_m, _args, out):
        if cap["unet_calls"] == 0:
            cap["noise_pred_step0"] = out.sample.clone()
        cap["unet_calls"] += 1

    perms = []
    real_randperm = torch.randperm

    def randperm(n, *args, **kwargs):
        r = real_randperm(n, *args, **kwargs)
        perms.append(r.clone())
        return r

    handles = [pipe.unet.register_forward_pre_hook(pre_hook, with_kwargs=True), pipe.unet.register_forward_hook(hook)]
    pipe._prepare_latents_free_noise = prepare
    pipe._encode_prompt_free_noise = encode
    torch.randperm = randperm
    try:
        out = pipe(prompt=prompt, negative_prompt=NEGATIVE, num_frames=frames, height=HEIGHT, width=WIDTH,
                   num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="latent")
    finally:
        torch.randperm = real_randperm
        pipe._prepare_latents_free_noise = orig_prepare
        pipe._encode_prompt_free_noise = orig_encode
        for h in handles:
            h.remove()
    cap["final_latents"] = out.frames
    cap["perms"] = perms
    assert cap["unet_calls"] == STEPS
    assert torch.equal(cap["ehs"], cap["rows"])
    assert torch.equal(cap["x0"], torch.cat([cap["init_latents"]] * 2))  # init_noise_sigma 1, scale_model_input identity
    return cap


def keyframes_to_end(prompts: dict[int, str], frames: int) -> dict[int, str]:
    """_encode_prompt_free_noise's keyframe list: sorted, the last prompt held to frame F-1."""
    keyed = dict(sorted(prompts.items()))
    keyed[frames - 1] = keyed[list(keyed)[-1]]
    return keyed


def lerp_rows(keys: list[int], embeds: np.ndarray) -> np.ndarray:
    """_encode_prompt_free_noise's interpolation written out in float32 (keys include F-1)."""
    rows = np.zeros((keys[-1] + 1, *embeds.shape[1:]), dtype=np.float32)
    for i in range(len(keys) - 1):
        a, b = keys[i], keys[i + 1]
        n = b - a + 1
        for j in range(n):
            alpha = j / (n - 1)
            rows[a + j] = np.float32(1 - alpha) * embeds[i] + np.float32(alpha) * embeds[i + 1]
    return rows


@torch.no_grad()
def encode_batch(te, ids: np.ndarray) -> torch.Tensor:
    """One text-encoder call on all rows, as encode_prompt does for a list of prompts."""
    return te(torch.from_numpy(ids), attention_mask=None).last_hidden_state


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=Path("target/fixtures"))
    parser.add_argument("--goldens", type=Path, default=Path("tests/goldens"),
                        help="where personalized_v1/v2.npz (fixture and loop checks) are read")
    parser.add_argument("--out", type=Path, default=Path("tests/goldens/context.npz"))
    parser.add_argument("--tokenizer", type=Path, default=pg.TOKENIZER_JSON)
    args = parser.parse_args()

    t_start = time.time()
    torch.manual_seed(mg.SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.set_grad_enabled(False)
    import tokenizers

    packages = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "numpy": np.__version__}
    print(f"packages: {packages}")
    assert diffusers.__version__ == "0.42.1", "the docstring's line numbers are diffusers 0.42.1's"

    fx = mg.Fixtures(args.fixtures)
    fx.check_manifest()
    goldens = {}
    for version in ("v1", "v2"):
        path = args.goldens / f"personalized_{version}.npz"
        golden = np.load(path)
        meta = json.loads(bytes(golden["meta"]).decode("utf-8"))
        for f, sha in meta["fixture_sha256"].items():
            assert fx.sha256(f) == sha, f"{f}: fixture differs from the one {path} was made from"
        goldens[version] = golden
    print("fixtures match personalized_v1/v2.npz's meta")

    image = mg.load_image_model(fx, "personalized.safetensors", torch.float16)
    motion = {v: mg.load_motion_module(fx, v) for v in ("v1", "v2")}
    tokenizer = pg.diffusers_tokenizer(args.tokenizer)
    ctok = pg.ClipTokenizer(args.tokenizer)
    te = image.text_encoder
    scheduler = mg.make_scheduler()
    timesteps = scheduler.timesteps.numpy().astype(np.int64)

    arrays: dict[str, np.ndarray] = {
        "timesteps": timesteps,
        "guidance": np.array(GUIDANCE, dtype=np.float32),
        "context_length": np.array(CONTEXT_LENGTH, dtype=np.int64),
    }
    checks: dict[str, object] = {}
    cases_meta: dict[str, dict] = {}

    neg_ids = prompt_ids(tokenizer, ctok, NEGATIVE)
    cond_ids = prompt_ids(tokenizer, ctok, PROMPT)
    uncond = mg.encode_text(te, torch.from_numpy(neg_ids))
    cond = mg.encode_text(te, torch.from_numpy(cond_ids))

    # --- the uniform loop with one window reproduces the plain golden loop
    for version in ("v1", "v2"):
        golden = goldens[version]
        unet = mg.build_unet(fx, image, motion[version])
        u = mg.encode_text(te, torch.from_numpy(golden["ddim_uncond_ids"]))
        c = mg.encode_text(te, torch.from_numpy(golden["ddim_cond_ids"]))
        got = uniform_sample(unet, c.expand(16, -1, -1), u.expand(16, -1, -1), torch.from_numpy(golden["ddim_init_latents"]),
                             [list(range(16))], freenoise_weights(16, "pyramid"))
        d = max_abs(got, golden["ddim_final_latents"]) / float(np.abs(golden["ddim_final_latents"]).max())
        print(f"check uniform loop, one 16-frame window (pyramid) vs personalized_{version}.npz ddim_final_latents: "
              f"max rel {d:.3g}")
        assert d < 1e-5, d
        checks[f"uniform_one_window_vs_personalized_{version}_rel"] = d

    # --- FreeNoise
    pipes = {}
    for name, (version, frames, scheme) in FREENOISE_CASES.items():
        print(f"\n=== {name}: FreeNoise {version}, {frames} frames, {scheme}")
        mm = motion[version]
        key = (version, scheme)
        if key not in pipes:
            pipes[key] = make_freenoise_pipeline(fx, image, mm, te, tokenizer, scheme)
            d = check_one_window_equals_plain(fx, image, mm, pipes[key])
            print(f"  check one 16-frame window: FreeNoise UNet vs plain patched UNet max rel {d:.3g}")
            checks[f"freenoise_one_window_{version}_{scheme}_rel"] = d
            if version == "v2" and scheme == "pyramid":
                line = check_freenoise_blocks(pipes[key].unet, CONTEXT_LENGTH, FREENOISE_STRIDE)
                print(f"  check {line}")
                checks["freenoise_block_written_out"] = line
        pipe = pipes[key]
        seed = derived_seed(name)
        cap = run_freenoise(pipe, PROMPT, frames, seed)
        shape = (1, 4, frames, mg.LATENT_SIZE, mg.LATENT_SIZE)
        lat, perms = reference_shuffled_latents(seed, shape, CONTEXT_LENGTH, FREENOISE_STRIDE)
        assert torch.equal(lat, cap["init_latents"]), "written-out shuffle differs"
        assert len(perms) == len(cap["perms"]) and all(torch.equal(a, b) for a, b in zip(perms, cap["perms"]))
        check_randperm_mt19937(seed, int(np.prod(shape)), perms)
        print(f"  init latents = written-out randn + shuffle (equal); {len(perms)} randperms "
              f"{[len(p) for p in perms]} = mt19937 Fisher-Yates (checked)")
        # prompt rows: single prompt lerped with itself
        rows = cap["rows"]
        d_rows_c = max_abs(rows[frames:], cond.expand(frames, -1, -1))
        d_rows_u = max_abs(rows[:frames], uncond.expand(frames, -1, -1))
        keyed = keyframes_to_end({0: PROMPT}, frames)
        lerp = lerp_rows(list(keyed), encode_batch(te, np.concatenate([cond_ids] * len(keyed))).numpy())
        assert np.array_equal(lerp, rows[frames:].numpy()), "written-out lerp differs"
        neg_lerp = lerp_rows(list(keyed), encode_batch(te, np.concatenate([neg_ids] * len(keyed))).numpy())
        assert np.array_equal(neg_lerp, rows[:frames].numpy()), "written-out negative lerp differs"
        print(f"  prompt rows vs encoder output: cond max abs {d_rows_c:.3g}, uncond {d_rows_u:.3g} "
              f"(lerp of two equal embeddings); written-out lerp bit-identical")
        windows = [block_w for block_w in freenoise_windows(frames, CONTEXT_LENGTH, FREENOISE_STRIDE)]
        block = next(b for b in motion_blocks(pipe.unet))
        theirs = block._get_frame_indices(frames)
        assert [(s, e) for s, e, first in windows if first == s] == theirs, (windows, theirs)
        assert freenoise_weights(CONTEXT_LENGTH, scheme) == [float(x) for x in block._get_frame_weights(CONTEXT_LENGTH, scheme)]
        final = cap["final_latents"]
        print(f"  windows {[(s, e) for s, e, _ in windows]}, accumulated from {[f for _, _, f in windows]}")
        print(f"  {mg.stats('noise_pred_step0', cap['noise_pred_step0'].numpy())}; {mg.stats('final_latents', final.numpy())}")
        perm_cat = torch.cat(perms).numpy().astype(np.int64)
        arrays.update({
            f"{name}__seed": np.array(seed, dtype=np.int64),
            f"{name}__prompt_ids": cond_ids,
            f"{name}__negative_ids": neg_ids,
            f"{name}__init_latents": cap["init_latents"].numpy(),
            f"{name}__perms": perm_cat,
            f"{name}__perm_lengths": np.array([len(p) for p in perms], dtype=np.int64),
            f"{name}__windows": np.array([(s, e) for s, e, _ in windows], dtype=np.int64),
            f"{name}__window_accumulate": np.array([(f, e) for _, e, f in windows], dtype=np.int64),
            f"{name}__frame_weights": np.array(freenoise_weights(CONTEXT_LENGTH, scheme), dtype=np.float32),
            f"{name}__frame_counts": freenoise_counts(frames, CONTEXT_LENGTH, FREENOISE_STRIDE, scheme),
            f"{name}__noise_pred_step0": cap["noise_pred_step0"].numpy(),
            f"{name}__final_latents": final.numpy(),
        })
        cases_meta[name] = {"method": "diffusers FreeNoise (AnimateDiffPipeline.__call__)", "motion_version": version,
                            "frames": frames, "context_length": CONTEXT_LENGTH, "context_stride": FREENOISE_STRIDE,
                            "weighting_scheme": scheme, "noise_type": "shuffle_context", "prompt": PROMPT,
                            "negative_prompt": NEGATIVE, "seed": seed,
                            "prompt_rows_vs_encoder_max_abs": {"cond": d_rows_c, "uncond": d_rows_u}}

    # --- uniform
    for name, (version, frames, scheme) in UNIFORM_CASES.items():
        print(f"\n=== {name}: context windows {version}, {frames} frames, {scheme}")
        unet = mg.build_unet(fx, image, motion[version])
        seed = derived_seed(name)
        init = torch.randn(1, 4, frames, mg.LATENT_SIZE, mg.LATENT_SIZE, generator=torch.Generator("cpu").manual_seed(seed))
        windows = static_standard_windows(frames, CONTEXT_LENGTH, UNIFORM_OVERLAP)
        weights = freenoise_weights(CONTEXT_LENGTH, scheme)
        trace: dict = {}
        final = uniform_sample(unet, cond.expand(frames, -1, -1), uncond.expand(frames, -1, -1), init, windows, weights, trace)
        print(f"  windows {[(w[0], w[-1] + 1) for w in windows]}; {mg.stats('eps_step0', trace['eps_step0'])}; "
              f"{mg.stats('final_latents', final.numpy())}")
        arrays.update({
            f"{name}__seed": np.array(seed, dtype=np.int64),
            f"{name}__prompt_ids": cond_ids,
            f"{name}__negative_ids": neg_ids,
            f"{name}__init_latents": init.numpy(),
            f"{name}__windows": np.array(windows, dtype=np.int64),
            f"{name}__weights": np.array(weights, dtype=np.float32),
            f"{name}__eps_step0_windows": trace["eps_step0_windows"],
            f"{name}__eps_step0": trace["eps_step0"],
            f"{name}__final_latents": final.numpy(),
        })
        cases_meta[name] = {"method": "sampler-level context windows (AnimateDiff-Evolved standard_static)",
                            "motion_version": version, "frames": frames, "context_length": CONTEXT_LENGTH,
                            "context_overlap": UNIFORM_OVERLAP, "fuse_method": scheme, "prompt": PROMPT,
                            "negative_prompt": NEGATIVE, "seed": seed}

    # --- prompt travel
    name = "travel_v2_40"
    frames = TRAVEL_FRAMES
    print(f"\n=== {name}: FreeNoise v2, {frames} frames, pyramid, prompt travel {sorted(TRAVEL)}")
    pipe = pipes[("v2", "pyramid")]
    seed = derived_seed(name)
    cap = run_freenoise(pipe, dict(TRAVEL), frames, seed)
    keys = sorted(TRAVEL)
    key_ids = np.concatenate([prompt_ids(tokenizer, ctok, TRAVEL[k]) for k in keys])
    keyed = keyframes_to_end(TRAVEL, frames)
    keyed_ids = np.concatenate([prompt_ids(tokenizer, ctok, p) for p in keyed.values()])
    batched = encode_batch(te, keyed_ids)  # diffusers' one call: p0, p1, p2, p2 (held to F-1)
    single = torch.cat([mg.encode_text(te, torch.from_numpy(keyed_ids[i : i + 1])) for i in range(len(keyed))])
    d_batch = max_abs(single, batched)
    rows = cap["rows"][frames:]
    neg_rows = cap["negative_rows"]
    assert torch.equal(cap["rows"][:frames], neg_rows)
    lerp = lerp_rows(list(keyed), batched.numpy())
    assert np.array_equal(lerp, rows.numpy()), "written-out lerp (batched keyframe embeddings) differs"
    for i, k in enumerate(keyed):
        assert torch.equal(rows[k], batched[i]), k
    d_single = max_abs(lerp_rows(list(keyed), single.numpy()), rows)
    neg_keyed = keyframes_to_end({0: NEGATIVE}, frames)
    neg_lerp = lerp_rows(list(neg_keyed), encode_batch(te, np.concatenate([neg_ids] * len(neg_keyed))).numpy())
    assert np.array_equal(neg_lerp, neg_rows.numpy()), "written-out negative lerp differs"
    d_neg = max_abs(neg_rows, uncond.expand(frames, -1, -1))
    print(f"  keyframes {list(keyed)}; keyframe embeddings: one batched encoder call vs one call per prompt max abs "
          f"{d_batch:.3g}; rows from per-prompt embeddings vs diffusers' max abs {d_single:.3g}; negative rows vs "
          f"the empty prompt's embedding {d_neg:.3g}; written-out lerps bit-identical")
    lat, perms = reference_shuffled_latents(seed, (1, 4, frames, 8, 8), CONTEXT_LENGTH, FREENOISE_STRIDE)
    assert torch.equal(lat, cap["init_latents"]) and all(torch.equal(a, b) for a, b in zip(perms, cap["perms"]))
    final = cap["final_latents"]
    print(f"  {mg.stats('noise_pred_step0', cap['noise_pred_step0'].numpy())}; {mg.stats('final_latents', final.numpy())}")
    windows = freenoise_windows(frames, CONTEXT_LENGTH, FREENOISE_STRIDE)
    arrays.update({
        f"{name}__seed": np.array(seed, dtype=np.int64),
        f"{name}__keyframes": np.array(keys, dtype=np.int64),
        f"{name}__keyframe_ids": key_ids,
        f"{name}__negative_ids": neg_ids,
        f"{name}__prompt_embeds": rows.numpy(),
        f"{name}__negative_embeds": neg_rows.numpy(),
        f"{name}__init_latents": cap["init_latents"].numpy(),
        f"{name}__perms": torch.cat(perms).numpy().astype(np.int64),
        f"{name}__perm_lengths": np.array([len(p) for p in perms], dtype=np.int64),
        f"{name}__windows": np.array([(s, e) for s, e, _ in windows], dtype=np.int64),
        f"{name}__frame_weights": np.array(freenoise_weights(CONTEXT_LENGTH, "pyramid"), dtype=np.float32),
        f"{name}__noise_pred_step0": cap["noise_pred_step0"].numpy(),
        f"{name}__final_latents": final.numpy(),
    })
    cases_meta[name] = {"method": "diffusers FreeNoise prompt travel", "motion_version": "v2", "frames": frames,
                        "weighting_scheme": "pyramid", "prompt": {str(k): v for k, v in TRAVEL.items()},
                        "negative_prompt": NEGATIVE, "seed": seed,
                        "keyframe_encoder_batched_vs_single_max_abs": d_batch,
                        "rows_from_single_encodes_vs_diffusers_max_abs": d_single}

    name = "travel_uniform_v2_40"
    print(f"\n=== {name}: context windows v2, {frames} frames, pyramid, diffusers' per-frame rows")
    unet = mg.build_unet(fx, image, motion["v2"])
    seed = derived_seed(name)
    init = torch.randn(1, 4, frames, 8, 8, generator=torch.Generator("cpu").manual_seed(seed))
    windows = static_standard_windows(frames, CONTEXT_LENGTH, UNIFORM_OVERLAP)
    weights = freenoise_weights(CONTEXT_LENGTH, "pyramid")
    trace = {}
    final = uniform_sample(unet, rows, neg_rows, init, windows, weights, trace)
    print(f"  {mg.stats('eps_step0', trace['eps_step0'])}; {mg.stats('final_latents', final.numpy())}")
    arrays.update({
        f"{name}__seed": np.array(seed, dtype=np.int64),
        f"{name}__init_latents": init.numpy(),
        f"{name}__windows": np.array(windows, dtype=np.int64),
        f"{name}__weights": np.array(weights, dtype=np.float32),
        f"{name}__eps_step0": trace["eps_step0"],
        f"{name}__final_latents": final.numpy(),
    })
    cases_meta[name] = {"method": "sampler-level context windows with travel_v2_40's prompt_embeds / negative_embeds",
                        "motion_version": "v2", "frames": frames, "context_overlap": UNIFORM_OVERLAP,
                        "fuse_method": "pyramid", "seed": seed}

    meta = {
        "tool": TOOL,
        "packages": packages,
        "fixture_sha256": {f: fx.sha256(f) for f in ["arch.json", "personalized.safetensors", "mm_v1.ckpt",
                                                     "mm_v1.safetensors", "mm_v2.ckpt", "mm_v2.safetensors"]},
        "tokenizer_sha256": mg.sha256_of(args.tokenizer),
        "model": "make_goldens.build_unet (personalized + mm_v1/mm_v2, official adjustments), AttnProcessor",
        "scheduler": "make_goldens.make_scheduler (DDIM leading, steps_offset 1, eta 0), 4 steps",
        "guidance": GUIDANCE, "height": HEIGHT, "width": WIDTH,
        "cases": cases_meta,
        "checks": checks,
        "sources": SOURCES,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    arrays = {k: a if a.flags["C_CONTIGUOUS"] else a.copy(order="C") for k, a in arrays.items()}  # keeps 0-d
    for k, a in arrays.items():
        assert a.flags["C_CONTIGUOUS"], k
        assert a.dtype in (np.float32, np.int64, np.uint8), (k, a.dtype)
        if a.dtype == np.float32:
            assert np.isfinite(a).all(), k
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)  # stored (uncompressed): ndarray-npy's plain npz reader
    print(f"\nwrote {args.out} ({args.out.stat().st_size} bytes, {len(arrays)} arrays) in {time.time() - t_start:.1f} s")
    for k, a in arrays.items():
        print(f"  {k:40s} {str(a.dtype):8s} {list(a.shape)}")
    if fx.findings:
        print("fixture findings:\n" + "\n".join(f"  - {f}" for f in fx.findings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
