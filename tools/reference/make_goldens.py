#!/usr/bin/env python3
"""Reference goldens for animatediff-onnx, computed with the semantics of the official AnimateDiff
code (guoyww/AnimateDiff, branch main) on the tiny fixtures of `docs/fixtures.md`.

What it does
------------
For every variant (base, personalized, personalized + LoRA with the official scaling, personalized
+ LoRA with the kohya/A1111 scaling) and every motion-module version (v1, v2, v3) it loads the
fixture files the way `animatediff/utils/util.py:load_weights` does, runs the text encoder, the 3-D
UNet, the VAE decoder and a 4-step DDIM sampling loop on seeded inputs, and writes
`{out}/{variant}_{mm}.npz` (array names in `tools/reference/README.md` and `--help`).

How the models are built
------------------------
Published packages only (this file copies no AnimateDiff or diffusers source):

* configs come from `arch.json` (the fixtures carry no diffusers config we depend on);
* the LDM single-file state dicts are converted by diffusers' own
  `single_file_utils.convert_ldm_unet_checkpoint / convert_ldm_vae_checkpoint /
  convert_ldm_clip_checkpoint`, the motion modules by `convert_animatediff_checkpoint_to_diffusers`;
  every key of every fixture file is accounted for (consumed by a converter, or one of the keys the
  official loaders ignore: LDM schedule buffers, `position_ids`, `pos_encoder.pe`), and every model
  is loaded strictly;
* the 3-D UNet is diffusers' `UNetMotionModel` (built with `from_unet2d` from a
  `UNet2DConditionModel` and a `MotionAdapter` config), the VAE `AutoencoderKL`, the text encoder
  transformers' `CLIPTextModel` (eager attention, causal mask, quick-GELU).

Where diffusers differs from the official code, and what this tool does instead
-----------------------------------------------------------------------------
1. Motion-module GroupNorm (docs/spec.md §2.2, §2.5, §11.3). diffusers' `AnimateDiffTransformer3D` applies
   its `norm` to the 5-D `(B, C, F, H, W)` tensor (statistics across frames); the official module
   normalises each frame. Every motion module's `norm` is replaced by `PerFrameGroupNorm` (same
   parameters, statistics over `(C/G, H, W)` per `(b, f)`).
2. ResNet / output GroupNorm for v1 (docs/spec.md §3.2, §11.2). diffusers always normalises per frame (the
   ResNets see the folded `(B·F, C, H, W)` batch); the official v1 model (`use_inflated_groupnorm`
   false) applies a plain GroupNorm to the 5-D tensor. For v1 only, `norm1`/`norm2` of all 22 UNet
   ResNets and `conv_norm_out` are replaced by `CrossFrameGroupNorm` (statistics over
   `(C/G, F, H, W)` per batch item). v2/v3 keep diffusers' per-frame norms, which are the official
   ones there. Spatial-transformer norms and the VAE are untouched.
3. Temporal positional encoding (docs/spec.md §2.3, §11.4, §11.15). diffusers adds its own persistent
   `pos_embed.pe` buffer at the same place the official code adds its table (LayerNorm output,
   before q/k/v, in both attention blocks). The buffer is replaced by `TemporalPositionalEncoding`,
   a table computed from the formula in fp32 whose length is the stored `pos_encoder.pe` length
   (24 for v1, 32 for v2/v3): that length is the frame limit. The stored table itself is not used
   (as the official loader, which skips `pos_encoder.pe`).
4. Text context per frame. `UNetMotionModel.forward` does not repeat `encoder_hidden_states` per
   frame (diffusers' pipeline does); `unet_forward` repeats it `b n c -> (b f) n c` as the official
   `Transformer3DModel` does.
5. Attention. Every diffusers attention uses `AttnProcessor` (baddbmm with scale d^-0.5, softmax,
   bmm: the computation of the diffusers 0.11 `CrossAttention` the official code runs) instead of
   the default SDPA processor. Same mathematics; named so that the order of operations is known.
6. VAE decoding as `AnimationPipeline.decode_latents`: `1 / 0.18215 * latents`, one frame per
   `vae.decode` call, `(x / 2 + 0.5).clamp(0, 1)`, then `(x * 255).astype(uint8)` (truncation) as
   `save_videos_grid` (diffusers decodes in chunks and rounds).
7. Scheduler: `DDIMScheduler` with the official inference-yaml kwargs (linear betas, leading
   spacing, steps_offset 1, set_alpha_to_one) rather than a model's scheduler config.
8. LoRA: merged into the fp32 weights by our own code, W += m·(up@down) ("official", the kohya
   `alpha` is ignored as in AnimateDiff's `convert_lora`, docs/spec.md §5.4) or W += m·(alpha/r)·(up@down)
   ("kohya", docs/spec.md §5.2), m = 0.8 (`load_weights`' default `lora_alpha`). Modules are found through
   a lookup built from the real module names with '.' -> '_' (docs/spec.md §5.3); a key that matches
   nothing is an error. Extension over the official code: 3x3 (LoCon) convolutions are merged with
   up reshaped to [Cout, r] and down to [r, Cin·kh·kw]; AnimateDiff's `convert_lora` would fail
   on them.
9. Text encoder names. transformers >= 5 dropped the `text_model.` level of `CLIPTextModel`
   (its `from_pretrained` strips the prefix). The converted state dict keeps the `text_model.`
   names (as transformers 4.25 of the official stack); the prefix is stripped only to load, and
   the kohya lookup is built as `lora_te_text_model_...`, the official module path. The
   checkpoint's `position_ids` is checked to be arange(77) and not loaded (non-persistent buffer
   in transformers 5; the official stack would have loaded it).

Each adjustment is checked when a model is built: hand-written GroupNorms (per frame and across
frames, float64) against the replacement modules; a spec-§2.2 motion module written with
torch.nn.functional on the official `.ckpt` tensor names against every patched diffusers motion
module; a spec-§1.3 ResNet against a patched ResNet; a spec-§6.1 CLIP text encoder against
transformers'; the UNet output with and without each adjustment (it must change); per-item
timesteps; the eps of every norm (docs/spec.md §11.9); GEGLU with exact GELU; the DDIM timesteps and
reference ᾱ values (docs/spec.md §8.1).

Everything runs in float32 on the CPU with deterministic algorithms; inputs come from
`numpy.random.default_rng(seed)` and are identical in all 12 files.
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
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

import diffusers
import transformers
from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.loaders.single_file_utils import (
    convert_animatediff_checkpoint_to_diffusers,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
)
from diffusers.models.activations import GEGLU
from diffusers.models.attention_processor import AttnProcessor
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from transformers import CLIPTextConfig, CLIPTextModel

TOOL = "tools/reference/make_goldens.py"
SEED = 20240717

VARIANTS = ("base", "personalized", "personalized_lora_official", "personalized_lora_kohya")
MOTION_VERSIONS = ("v1", "v2", "v3")
# (stored pos_encoder.pe length, has a mid-block module, ResNet/out GroupNorm across frames)
MOTION_VERSION_TRAITS = {"v1": (24, False, True), "v2": (32, True, False), "v3": (32, False, False)}

LORA_MULTIPLIER = 0.8  # AnimateDiff load_weights(lora_alpha=0.8)
GUIDANCE = 7.5
DDIM_STEPS = 4
EXPECTED_DDIM_TIMESTEPS = [751, 501, 251, 1]
UNET_TIMESTEPS = (981, 21)  # two different timesteps, one per batch item
NUM_FRAMES = 16
LATENT_SIZE = 8
BOS, EOS = 49406, 49407
PROMPT_TOKENS = 12

# Keys of an LDM single-file checkpoint that no official loader reads (docs/spec.md §4.1).
LDM_IGNORED_KEYS = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "model_ema.decay", "model_ema.num_updates",
}
CLIP_POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"


class FixtureError(RuntimeError):
    """A fixture file does not have the content a real checkpoint of its kind would have."""


# ----------------------------------------------------------------------------------------------
# Fixture files
# ----------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Fixtures:
    """The fixture directory: file access, SHA-256 bookkeeping, and the findings about the files."""

    def __init__(self, root: Path):
        self.root = root
        self.findings: list[str] = []
        self._sha: dict[str, str] = {}
        self.arch = json.loads(self.path("arch.json").read_text())
        self.manifest = json.loads(self.path("fixtures.json").read_text())

    def path(self, name: str) -> Path:
        p = self.root / name
        if not p.exists():
            raise FixtureError(f"missing fixture file {p}")
        return p

    def sha256(self, name: str) -> str:
        if name not in self._sha:
            self._sha[name] = sha256_of(self.path(name))
        return self._sha[name]

    def note(self, text: str) -> None:
        print(f"  FIXTURE NOTE: {text}")
        self.findings.append(text)

    def check_manifest(self) -> None:
        """Every file named in fixtures.json must have the SHA-256 it states."""
        listed: dict[str, str] = {}

        def walk(node, prefix=""):
            if isinstance(node, dict):
                for k, v in node.items():
                    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v.lower()):
                        listed[k] = v.lower()
                    else:
                        walk(v, prefix)
            elif isinstance(node, list):
                for v in node:
                    if isinstance(v, dict) and "sha256" in v and ("path" in v or "name" in v or "file" in v):
                        listed[v.get("path") or v.get("name") or v.get("file")] = v["sha256"].lower()
                    else:
                        walk(v, prefix)

        walk(self.manifest)
        if not listed:
            self.note("fixtures.json lists no SHA-256 values that this tool recognises")
            return
        for name, want in sorted(listed.items()):
            p = self.root / name
            if not p.is_file():
                self.note(f"fixtures.json lists {name}, which is not a file in {self.root}")
                continue
            have = self.sha256(name)
            if have != want:
                self.note(f"fixtures.json: {name} sha256 {want} but the file has {have}")
        print(f"fixtures.json: {len(listed)} SHA-256 entries checked")


# ----------------------------------------------------------------------------------------------
# Configurations from arch.json
# ----------------------------------------------------------------------------------------------


def unet2d_config(arch: dict) -> dict:
    u = arch["unet"]
    channels = tuple(u["block_out_channels"])
    levels = list(u["attention_levels"])
    if u.get("transformer_layers_per_block", 1) != 1:
        raise FixtureError("arch.json: transformer_layers_per_block != 1 is not SD1.5")
    if u["time_embed_dim"] != 4 * channels[0]:
        raise FixtureError("arch.json: time_embed_dim must be 4 x block_out_channels[0] (SD1.5)")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels))
    return dict(
        sample_size=LATENT_SIZE,
        in_channels=u["in_channels"],
        out_channels=u["out_channels"],
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=u["layers_per_block"],
        attention_head_dim=u["num_attention_heads"],  # legacy name: it is the number of heads
        cross_attention_dim=u["cross_attention_dim"],
        norm_num_groups=u["norm_num_groups"],
        norm_eps=1e-5,
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        mid_block_scale_factor=1,
        act_fn="silu",
        use_linear_projection=bool(u["use_linear_projection"]),
        upcast_attention=False,
        center_input_sample=False,
    )


def motion_adapter_config(arch: dict, max_len: int, has_mid: bool) -> dict:
    u, m = arch["unet"], arch["motion_module"]
    return dict(
        block_out_channels=tuple(u["block_out_channels"]),
        motion_layers_per_block=u["layers_per_block"],
        motion_transformer_layers_per_block=1,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=m["num_attention_heads"],
        motion_norm_num_groups=m["norm_num_groups"],
        motion_max_seq_length=max_len,
        use_motion_mid_block=has_mid,
    )


def vae_config(arch: dict) -> dict:
    v = arch["vae"]
    n = len(v["block_out_channels"])
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(v["block_out_channels"]),
        layers_per_block=v["layers_per_block"],
        act_fn="silu",
        latent_channels=v["latent_channels"],
        norm_num_groups=v["norm_num_groups"],
        sample_size=LATENT_SIZE * 2 ** (n - 1),
        scaling_factor=v["scaling_factor"],
    )


def clip_config(arch: dict) -> CLIPTextConfig:
    t = arch["text_encoder"]
    config = CLIPTextConfig(
        vocab_size=t["vocab_size"],
        hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        max_position_embeddings=t["max_position_embeddings"],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    config._attn_implementation = "eager"
    return config


# ----------------------------------------------------------------------------------------------
# The official semantics, as modules that replace diffusers' ones
# ----------------------------------------------------------------------------------------------


class FrameCount:
    """Number of frames of the UNet call in progress (set by a forward pre-hook on the UNet)."""

    def __init__(self) -> None:
        self.value: int | None = None


class PerFrameGroupNorm(nn.GroupNorm):
    """The official motion-module GroupNorm: statistics over (C/G, H, W) of every frame.

    Takes the 5-D (B, C, F, H, W) tensor that diffusers' AnimateDiffTransformer3D hands its norm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        folded = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        y = F.group_norm(folded, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


class CrossFrameGroupNorm(nn.GroupNorm):
    """The v1 ResNet/output GroupNorm: statistics over (C/G, F, H, W) of every batch item.

    Takes the folded (B·F, C, H, W) tensor diffusers' ResNets work on (b outer, f inner).
    """

    def __init__(self, *args, frames: FrameCount, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames = frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.frames.value
        if f is None:
            raise RuntimeError("CrossFrameGroupNorm used outside a UNet call")
        bf, c, h, w = x.shape
        video = x.reshape(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)
        y = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return y.permute(0, 2, 1, 3, 4).reshape(bf, c, h, w)


def temporal_position_table(max_len: int, channels: int) -> torch.Tensor:
    """Spec §2.3: pe[p, 2i] = sin(p·div_i), pe[p, 2i+1] = cos(p·div_i),
    div_i = exp(2i·(−ln 10000 / C)); fp32, shape [1, max_len, C]."""
    two_i = torch.arange(0, channels, 2, dtype=torch.float32)
    div = torch.exp(two_i * (-math.log(10000.0) / channels))
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    pe = torch.zeros(1, max_len, channels, dtype=torch.float32)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


class TemporalPositionalEncoding(nn.Module):
    """Adds the formula table to the LayerNorm output of a temporal attention block (input
    (B·H·W, F, C)). max_len = the stored pos_encoder.pe length: the frame limit."""

    def __init__(self, channels: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("pe", temporal_position_table(max_len, channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.max_len:
            raise ValueError(f"{frames} frames exceed the motion module's {self.max_len} positions")
        return x + self.pe[:, :frames]


def replace_group_norm(parent: nn.Module, name: str, cls, **extra) -> None:
    old = getattr(parent, name)
    assert type(old) is nn.GroupNorm, f"{name}: expected nn.GroupNorm, found {type(old).__name__}"
    new = cls(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine, **extra)
    new.load_state_dict(old.state_dict())
    setattr(parent, name, new)


def apply_official_motion_modules(unet: UNetMotionModel, max_len: int) -> int:
    """Adjustments 1 and 3: per-frame motion-module norm, formula positional table."""
    count = 0
    for module in unet.modules():
        if isinstance(module, AnimateDiffTransformer3D):
            replace_group_norm(module, "norm", PerFrameGroupNorm)
            for block in module.transformer_blocks:
                assert block.pos_embed is not None and block.attn2 is not None
                assert block.attn2.is_cross_attention is False
                block.pos_embed = TemporalPositionalEncoding(block.dim, max_len)
            count += 1
    return count


def apply_cross_frame_resnet_norms(unet: UNetMotionModel, frames: FrameCount) -> int:
    """Adjustment 2 (v1 only): ResNet norm1/norm2 and conv_norm_out across frames."""
    count = 0
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            replace_group_norm(module, "norm1", CrossFrameGroupNorm, frames=frames)
            replace_group_norm(module, "norm2", CrossFrameGroupNorm, frames=frames)
            count += 1
    replace_group_norm(unet, "conv_norm_out", CrossFrameGroupNorm, frames=frames)
    return count


def track_frames(unet: UNetMotionModel, frames: FrameCount) -> None:
    def pre_hook(_module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        frames.value = sample.shape[2]

    unet.register_forward_pre_hook(pre_hook, with_kwargs=True)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def account_for_keys(fx: Fixtures, file: str, source: dict, converted: list[dict], ignored) -> None:
    """Every tensor of `source` must have been handed to the model by a converter (tracked by
    storage address, so renames and views count) unless `ignored(key)`."""
    ptrs: dict[int, str] = {}
    for k, v in source.items():
        if v.numel() == 0:
            raise FixtureError(f"{file}: {k} is empty")
        if v.data_ptr() in ptrs:
            raise RuntimeError(f"{file}: {k} and {ptrs[v.data_ptr()]} share storage; cannot track")
        ptrs[v.data_ptr()] = k
    used = {v.data_ptr() for sd in converted for v in sd.values()}
    unused = sorted(k for k, v in source.items() if v.data_ptr() not in used and not ignored(k))
    if unused:
        raise FixtureError(f"{file}: {len(unused)} keys read by no converter: {unused[:8]}")
    n_converted = sum(len(sd) for sd in converted)
    n_used = sum(1 for k, v in source.items() if v.data_ptr() in used)
    if n_converted != n_used:
        raise RuntimeError(f"{file}: {n_converted} converted tensors from {n_used} source tensors")


def load_strict(model: nn.Module, state: dict, what: str, allow_missing=lambda k: False) -> None:
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if not allow_missing(k)]
    if unexpected or bad_missing:
        raise FixtureError(f"{what}: unexpected keys {unexpected[:8]}, missing keys {bad_missing[:8]}")


@dataclass
class MotionModuleFile:
    version: str
    state: dict  # official key names, as torch.load returned them
    max_len: int
    has_mid: bool
    files: list[str]


def load_motion_module(fx: Fixtures, version: str) -> MotionModuleFile:
    """As load_weights: torch.load (here weights_only=True), unwrap "state_dict", keep the
    "motion_modules." keys. The .safetensors twin must hold identical tensors."""
    ckpt_name, st_name = f"mm_{version}.ckpt", f"mm_{version}.safetensors"
    raw = torch.load(fx.path(ckpt_name), map_location="cpu", weights_only=True)
    wrapped = isinstance(raw, dict) and "state_dict" in raw
    state = raw["state_dict"] if wrapped else raw
    extra = [k for k in raw if k != "state_dict"] if wrapped else []
    state = dict(state)
    state.pop("animatediff_config", None)
    print(f"  {ckpt_name}: {len(state)} tensors, wrapped in state_dict: {wrapped}, other entries: {extra}")
    if (version == "v3") != wrapped:
        fx.note(f"{ckpt_name}: wrapped in {{'state_dict': ...}} = {wrapped} (docs/fixtures.md: only v3)")
    not_mm = [k for k in state if "motion_modules." not in k]
    if not_mm:
        raise FixtureError(f"{ckpt_name}: keys outside motion_modules (the official loader drops them): {not_mm[:5]}")

    twin = load_file(fx.path(st_name))
    if set(twin) != set(state):
        raise FixtureError(f"{st_name} and {ckpt_name} differ in keys: {sorted(set(twin) ^ set(state))[:8]}")
    for k, v in state.items():
        if v.dtype != twin[k].dtype or v.shape != twin[k].shape or not torch.equal(v, twin[k]):
            raise FixtureError(f"{st_name} and {ckpt_name} differ at {k}")
        if v.dtype != torch.float32:
            fx.note(f"{ckpt_name}: {k} is {v.dtype}, not fp32")

    pe = {k: v for k, v in state.items() if k.endswith("pos_encoder.pe")}
    lengths = {v.shape[1] for v in pe.values()}
    if len(lengths) != 1:
        raise FixtureError(f"{ckpt_name}: pos_encoder.pe lengths {lengths}")
    max_len = lengths.pop()
    has_mid = any(k.startswith("mid_block.") for k in state)
    want_len, want_mid, _ = MOTION_VERSION_TRAITS[version]
    if (max_len, has_mid) != (want_len, want_mid):
        raise FixtureError(f"{ckpt_name}: pe length {max_len}, mid block {has_mid}; {version} has {want_len}, {want_mid}")
    worst = 0.0
    for k, v in pe.items():
        table = temporal_position_table(max_len, v.shape[2])
        worst = max(worst, (v.float() - table).abs().max().item())
    print(f"  stored pos_encoder.pe vs formula: max |diff| {worst:.3g} (the stored table is not used)")
    if worst > 1e-5:
        fx.note(f"{ckpt_name}: stored pos_encoder.pe differs from the formula by {worst:.3g} (official ignores it)")
    n_modules = len({k.split(".temporal_transformer.")[0] for k in state})
    if len(state) != 28 * n_modules:
        raise FixtureError(f"{ckpt_name}: {len(state)} keys for {n_modules} modules (28 each expected)")
    return MotionModuleFile(version, state, max_len, has_mid, [ckpt_name, st_name])


def load_ldm_file(fx: Fixtures, name: str, want_dtype: torch.dtype) -> dict:
    sd = load_file(fx.path(name))  # = safe_open(...).get_tensor for every key, as load_weights
    dtypes = {}
    for k, v in sd.items():
        dtypes.setdefault(v.dtype, []).append(k)
    summary = {str(d): len(ks) for d, ks in dtypes.items()}
    print(f"  {name}: {len(sd)} tensors {summary}")
    odd = [k for d, ks in dtypes.items() if d != want_dtype for k in ks if k != CLIP_POSITION_IDS]
    if odd:
        fx.note(f"{name}: {len(odd)} tensors not {want_dtype}: {odd[:5]}")
    return sd


def clip_prefix(text_encoder: CLIPTextModel) -> str:
    """transformers >= 5 dropped the `text_model.` level of CLIPTextModel (its from_pretrained
    strips that prefix from checkpoints). The official stack (transformers 4.25), the LDM
    converter output and kohya LoRA names all have it: "" if the model still has the level."""
    return "" if hasattr(text_encoder, "text_model") else "text_model."


def clip_state_for(text_encoder: CLIPTextModel, state: dict) -> dict:
    prefix = clip_prefix(text_encoder)
    if not prefix:
        return state
    if not all(k.startswith(prefix) for k in state):
        raise FixtureError(f"text encoder keys without {prefix!r}: {[k for k in state if not k.startswith(prefix)][:5]}")
    return {k[len(prefix):]: v for k, v in state.items()}


@dataclass
class ImageModel:
    """UNet (spatial, still without motion modules), VAE and text encoder state of one LDM file."""

    name: str
    unet_state: dict
    te_state: dict  # converted text-encoder tensors, `text_model.` names
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    files: list[str]


def load_image_model(fx: Fixtures, name: str, want_dtype: torch.dtype) -> ImageModel:
    arch = fx.arch
    sd = load_ldm_file(fx, name, want_dtype)

    unet_cfg = UNet2DConditionModel(**unet2d_config(arch)).config
    unet_state = convert_ldm_unet_checkpoint(sd, unet_cfg)

    vae = AutoencoderKL(**vae_config(arch))
    vae_state = convert_ldm_vae_checkpoint(sd, vae.config)
    load_strict(vae, vae_state, f"{name}: VAE")

    te_state = convert_ldm_clip_checkpoint(sd)
    position_ids = te_state.pop("text_model.embeddings.position_ids", None)
    n_pos = arch["text_encoder"]["max_position_embeddings"]
    if position_ids is None:
        fx.note(f"{name}: no {CLIP_POSITION_IDS}")
    elif not torch.equal(position_ids.reshape(-1).long(), torch.arange(n_pos)):
        # transformers 4.25 (the official stack) would load this buffer; we use arange.
        fx.note(f"{name}: position_ids is not arange({n_pos}): {position_ids.reshape(-1)[:8].tolist()}...")
    text_encoder = CLIPTextModel(clip_config(arch))
    load_strict(text_encoder, clip_state_for(text_encoder, te_state), f"{name}: text encoder")

    ignored = lambda k: k in LDM_IGNORED_KEYS or k == CLIP_POSITION_IDS
    account_for_keys(fx, name, sd, [unet_state, vae_state, te_state], ignored)
    schedule = sorted(k for k in sd if k in LDM_IGNORED_KEYS)
    print(f"  {name}: UNet {len(unet_state)}, VAE {len(vae_state)}, text encoder {len(te_state)} tensors; "
          f"ignored {len(schedule)} schedule buffers{' + position_ids' if position_ids is not None else ''}")

    vae.set_attn_processor(AttnProcessor())
    vae.eval()
    text_encoder.eval()
    return ImageModel(name, unet_state, te_state, vae, text_encoder, [name])


def build_unet(fx: Fixtures, image: ImageModel, mm: MotionModuleFile, official: bool = True) -> UNetMotionModel:
    """UNetMotionModel with the image model's spatial weights and the motion module; with
    `official` the adjustments of the module docstring are applied."""
    arch = fx.arch
    unet2d = UNet2DConditionModel(**unet2d_config(arch))
    adapter = MotionAdapter(**motion_adapter_config(arch, mm.max_len, mm.has_mid))
    unet = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=False)

    motion_state = convert_animatediff_checkpoint_to_diffusers(mm.state)
    account_for_keys(fx, mm.files[0], mm.state, [motion_state], lambda k: k.endswith("pos_encoder.pe"))
    overlap = set(motion_state) & set(image.unet_state)
    assert not overlap, overlap
    state = {**image.unet_state, **motion_state}
    load_strict(unet, state, f"{image.name} + {mm.files[0]}: UNet", allow_missing=lambda k: k.endswith("pos_embed.pe"))
    missing_pe = [k for k in unet.state_dict() if k.endswith("pos_embed.pe")]
    n_modules = sum(isinstance(m, AnimateDiffTransformer3D) for m in unet.modules())
    assert len(missing_pe) == n_modules, (len(missing_pe), n_modules)

    unet.set_attn_processor(AttnProcessor())
    unet.eval()
    if official:
        make_official(unet, mm)
        # The adjustments kept every weight: the state dict is exactly the loaded one.
        after = unet.state_dict()
        assert set(after) == set(state), sorted(set(after) ^ set(state))[:8]
        for k, v in state.items():
            assert torch.equal(after[k], v.to(torch.float32)), k
    return unet


def make_official(unet: UNetMotionModel, mm: MotionModuleFile) -> None:
    frames = FrameCount()
    unet._frames = frames
    track_frames(unet, frames)
    n_mm = apply_official_motion_modules(unet, mm.max_len)
    assert n_mm == (21 if mm.has_mid else 20), n_mm
    if MOTION_VERSION_TRAITS[mm.version][2]:
        n_res = apply_cross_frame_resnet_norms(unet, frames)
        assert n_res == 22, n_res
        assert isinstance(unet.conv_norm_out, CrossFrameGroupNorm)
    else:
        assert type(unet.conv_norm_out) is nn.GroupNorm


# ----------------------------------------------------------------------------------------------
# LoRA
# ----------------------------------------------------------------------------------------------


@dataclass
class LoraReport:
    unet_modules: int = 0
    te_modules: int = 0
    kinds: dict = field(default_factory=dict)
    alphas: set = field(default_factory=set)
    ranks: set = field(default_factory=set)


def merge_kohya_lora(unet: nn.Module, text_encoder: nn.Module, lora: dict, multiplier: float, scaling: str) -> LoraReport:
    """Merge a kohya/sd-scripts LoRA into fp32 weights. scaling "official": W += m·(up@down)
    (alpha ignored, AnimateDiff convert_lora); "kohya": W += m·(alpha/r)·(up@down)."""
    assert scaling in ("official", "kohya")
    targets: dict[str, tuple[str, nn.Module]] = {}
    te_prefix = "lora_te_" + clip_prefix(text_encoder).replace(".", "_")
    for prefix, model, kind in (("lora_unet_", unet, "unet"), (te_prefix, text_encoder, "te")):
        for name, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                key = prefix + name.replace(".", "_")
                if key in targets:
                    raise RuntimeError(f"LoRA lookup collision: {key}")
                targets[key] = (kind, module)

    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in lora.items():
        stem, _, part = key.partition(".")
        if part not in ("lora_down.weight", "lora_up.weight", "alpha"):
            raise FixtureError(f"LoRA key {key}: unsupported part {part!r}")
        groups.setdefault(stem, {})[part] = tensor

    report = LoraReport()
    for stem, parts in sorted(groups.items()):
        if stem not in targets:
            raise FixtureError(f"LoRA module {stem} matches no module of the UNet or text encoder")
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise FixtureError(f"LoRA module {stem}: needs lora_down and lora_up, has {sorted(parts)}")
        kind, module = targets[stem]
        down = parts["lora_down.weight"].to(torch.float32)
        up = parts["lora_up.weight"].to(torch.float32)
        rank = down.shape[0]
        weight = module.weight
        if up.shape[0] != weight.shape[0] or up.shape[1] != rank or any(s != 1 for s in up.shape[2:]):
            raise FixtureError(f"LoRA {stem}: up {tuple(up.shape)} does not fit weight {tuple(weight.shape)}, rank {rank}")
        if tuple(down.shape[1:]) != tuple(weight.shape[1:]):
            raise FixtureError(f"LoRA {stem}: down {tuple(down.shape)} does not fit weight {tuple(weight.shape)}")
        delta = (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)).reshape(weight.shape)
        alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
        with torch.no_grad():
            if scaling == "official":
                weight += multiplier * delta
            else:
                weight += delta * (alpha / rank) * multiplier
        label = "linear" if weight.dim() == 2 else f"conv{weight.shape[2]}x{weight.shape[3]}"
        report.kinds[f"{kind}:{label}"] = report.kinds.get(f"{kind}:{label}", 0) + 1
        report.alphas.add(alpha)
        report.ranks.add(rank)
        if kind == "unet":
            report.unet_modules += 1
        else:
            report.te_modules += 1
    return report


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def make_scheduler() -> DDIMScheduler:
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(DDIM_STEPS)
    got = scheduler.timesteps.tolist()
    assert got == EXPECTED_DDIM_TIMESTEPS, got
    # docs/spec.md §8.1 reference values of the linear schedule
    for t, want in ((0, 0.999150), (1, 0.998290), (481, 0.181388), (961, 0.002478), (999, 0.001579)):
        assert abs(scheduler.alphas_cumprod[t].item() - want) < 2e-6, (t, scheduler.alphas_cumprod[t].item())
    assert scheduler.final_alpha_cumprod.item() == 1.0
    assert scheduler.init_noise_sigma == 1.0
    return scheduler


@torch.no_grad()
def encode_text(text_encoder: CLIPTextModel, ids: torch.Tensor) -> torch.Tensor:
    return text_encoder(ids, attention_mask=None).last_hidden_state


@torch.no_grad()
def unet_forward(unet: UNetMotionModel, sample: torch.Tensor, timestep, context: torch.Tensor) -> torch.Tensor:
    """sample (B, C, F, H, W); timestep scalar or (B,); context (B, 77, D), repeated per frame
    'b n c -> (b f) n c' as the official Transformer3DModel does."""
    frames = sample.shape[2]
    per_frame = context.repeat_interleave(frames, dim=0)
    return unet(sample, timestep, encoder_hidden_states=per_frame).sample


@torch.no_grad()
def decode_frames(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """AnimationPipeline.decode_latents up to the clamp: latents (N, 4, h, w) -> raw (N, 3, 8h, 8w)."""
    z = 1 / 0.18215 * latents
    return torch.cat([vae.decode(z[i : i + 1]).sample for i in range(z.shape[0])])


def frames_to_uint8(raw: torch.Tensor) -> np.ndarray:
    x = (raw / 2 + 0.5).clamp(0, 1)
    return (x * 255).numpy().astype(np.uint8)


@torch.no_grad()
def ddim_sample(unet, scheduler: DDIMScheduler, context: torch.Tensor, latents: torch.Tensor, guidance: float,
                trace: list | None = None) -> torch.Tensor:
    """AnimationPipeline.__call__'s loop: context = cat([uncond, cond]), UNet on cat([x, x]),
    eps = eps_u + s·(eps_c − eps_u), DDIM step with eta 0."""
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([x, x]), t)
        eps = unet_forward(unet, model_input, t, context)
        eps_uncond, eps_cond = eps.chunk(2)
        eps = eps_uncond + guidance * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
        if trace is not None:
            trace.append((int(t), eps_uncond.std().item(), (eps_cond - eps_uncond).std().item(),
                          eps.abs().max().item(), x.abs().max().item(), x.std().item()))
    return x


@dataclass
class Inputs:
    te_ids: np.ndarray
    unet_sample: np.ndarray
    unet_timestep: np.ndarray
    unet_context: np.ndarray
    vae_latents: np.ndarray
    ddim_latents: np.ndarray


def make_inputs(seed: int, arch: dict) -> Inputs:
    rng = np.random.default_rng(seed)
    n_pos = arch["text_encoder"]["max_position_embeddings"]
    ctx_dim = arch["unet"]["cross_attention_dim"]
    latent_c = arch["unet"]["in_channels"]
    ids = np.full((2, n_pos), EOS, dtype=np.int64)
    ids[:, 0] = BOS
    ids[1, 1 : 1 + PROMPT_TOKENS] = rng.integers(400, 49000, size=PROMPT_TOKENS)
    f32 = lambda shape: rng.standard_normal(shape, dtype=np.float32)
    return Inputs(
        te_ids=ids,
        unet_sample=f32((2, latent_c, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE)),
        unet_timestep=np.array(UNET_TIMESTEPS, dtype=np.float32),
        unet_context=f32((2, n_pos, ctx_dim)),
        vae_latents=f32((2, arch["vae"]["latent_channels"], LATENT_SIZE, LATENT_SIZE)),
        ddim_latents=f32((1, latent_c, NUM_FRAMES, LATENT_SIZE, LATENT_SIZE)),
    )


# ----------------------------------------------------------------------------------------------
# Checks of the adjustments
# ----------------------------------------------------------------------------------------------


def manual_group_norm(x5: torch.Tensor, groups: int, weight, bias, eps: float, across_frames: bool) -> torch.Tensor:
    """GroupNorm on (B, C, F, H, W) in float64, written out: mean and biased variance over
    (C/G, H, W) per frame, or over (C/G, F, H, W) when across_frames."""
    b, c, f, h, w = x5.shape
    x = x5.double().reshape(b, groups, c // groups, f, h, w)
    dims = (2, 3, 4, 5) if across_frames else (2, 4, 5)
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    y = ((x - mean) / torch.sqrt(var + eps)).reshape(b, c, f, h, w)
    return (y * weight.double()[None, :, None, None, None] + bias.double()[None, :, None, None, None]).float()


def video_like(generator: torch.Generator, b: int, c: int, f: int, h: int, w: int) -> torch.Tensor:
    """Random (B, C, F, H, W) whose frames have different offsets and scales, so that per-frame
    and cross-frame statistics differ."""
    x = torch.randn(b, c, f, h, w, generator=generator)
    scale = 0.5 + torch.rand(1, 1, f, 1, 1, generator=generator)
    offset = torch.linspace(-1.0, 1.0, f).reshape(1, 1, f, 1, 1)
    return x * scale + offset


def check_group_norm_modules() -> None:
    g = torch.Generator().manual_seed(SEED)
    b, c, f, h, w, groups = 2, 64, NUM_FRAMES, 4, 4, 32
    x5 = video_like(g, b, c, f, h, w)
    weight, bias = 1 + 0.2 * torch.randn(c, generator=g), 0.2 * torch.randn(c, generator=g)

    per_frame = PerFrameGroupNorm(groups, c, eps=1e-6)
    frames = FrameCount()
    frames.value = f
    cross = CrossFrameGroupNorm(groups, c, eps=1e-5, frames=frames)
    plain = nn.GroupNorm(groups, c, eps=1e-6)
    for m in (per_frame, cross, plain):
        m.weight.data.copy_(weight)
        m.bias.data.copy_(bias)

    folded = x5.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    got_pf = per_frame(x5)
    want_pf = manual_group_norm(x5, groups, weight, bias, 1e-6, across_frames=False)
    got_cf = cross(folded).reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
    want_cf = manual_group_norm(x5, groups, weight, bias, 1e-5, across_frames=True)
    diffusers_mm = plain(x5)  # what diffusers' AnimateDiffTransformer3D computes
    e_pf = (got_pf - want_pf).abs().max().item()
    e_cf = (got_cf - want_cf).abs().max().item()
    d_mm = (got_pf - diffusers_mm).abs().max().item()
    d_pc = (want_pf - manual_group_norm(x5, groups, weight, bias, 1e-6, across_frames=True)).abs().max().item()
    assert e_pf < 1e-5 and e_cf < 1e-5, (e_pf, e_cf)
    assert d_mm > 0.1 and d_pc > 0.1, (d_mm, d_pc)
    print(f"check GroupNorm: per-frame vs hand-written {e_pf:.2g}, cross-frame vs hand-written {e_cf:.2g}; "
          f"per-frame vs diffusers' 5-D norm differs by {d_mm:.3g}")


def spec_motion_module(sd: dict, prefix: str, x5: torch.Tensor, heads: int, groups: int, pe: torch.Tensor) -> torch.Tensor:
    """Spec §2.2 written out with torch.nn.functional on the official (.ckpt) tensor names.
    x5 (B, C, F, H, W) -> (B, C, F, H, W)."""
    w = lambda name: sd[prefix + name].to(torch.float32)
    b, c, f, hh, ww = x5.shape
    d = c // heads
    folded = x5.permute(0, 2, 1, 3, 4).reshape(b * f, c, hh, ww)
    h = F.group_norm(folded, groups, w("norm.weight"), w("norm.bias"), eps=1e-6)
    h = h.permute(0, 2, 3, 1).reshape(b * f, hh * ww, c)
    h = F.linear(h, w("proj_in.weight"), w("proj_in.bias"))
    blk = "transformer_blocks.0."
    for a in (0, 1):
        n = F.layer_norm(h, (c,), w(f"{blk}norms.{a}.weight"), w(f"{blk}norms.{a}.bias"), eps=1e-5)
        n = n.reshape(b, f, hh * ww, c).permute(0, 2, 1, 3).reshape(b * hh * ww, f, c)  # (b d) f c
        n = n + pe[:, :f]
        att = f"{blk}attention_blocks.{a}."
        split = lambda t: t.reshape(-1, f, heads, d).permute(0, 2, 1, 3)
        q, k, v = (split(F.linear(n, w(att + p + ".weight"))) for p in ("to_q", "to_k", "to_v"))
        o = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5, dim=-1) @ v
        o = o.permute(0, 2, 1, 3).reshape(-1, f, c)
        o = F.linear(o, w(att + "to_out.0.weight"), w(att + "to_out.0.bias"))
        h = h + o.reshape(b, hh * ww, f, c).permute(0, 2, 1, 3).reshape(b * f, hh * ww, c)
    n = F.layer_norm(h, (c,), w(blk + "ff_norm.weight"), w(blk + "ff_norm.bias"), eps=1e-5)
    value, gate = F.linear(n, w(blk + "ff.net.0.proj.weight"), w(blk + "ff.net.0.proj.bias")).chunk(2, dim=-1)
    h = h + F.linear(value * F.gelu(gate), w(blk + "ff.net.2.weight"), w(blk + "ff.net.2.bias"))
    h = F.linear(h, w("proj_out.weight"), w("proj_out.bias"))
    out = h.reshape(b * f, hh, ww, c).permute(0, 3, 1, 2) + folded
    return out.reshape(b, f, c, hh, ww).permute(0, 2, 1, 3, 4)


@torch.no_grad()
def check_motion_modules(fx: Fixtures, unet: UNetMotionModel, plain: UNetMotionModel, mm: MotionModuleFile) -> None:
    """Every patched motion module against spec_motion_module; diffusers' own module differs."""
    heads = fx.arch["motion_module"]["num_attention_heads"]
    groups = fx.arch["motion_module"]["norm_num_groups"]
    g = torch.Generator().manual_seed(SEED + 1)
    plain_modules = dict(plain.named_modules())
    worst, least_change, n = 0.0, math.inf, 0
    for name, module in unet.named_modules():
        if not isinstance(module, AnimateDiffTransformer3D):
            continue
        c = module.in_channels
        x5 = video_like(g, 2, c, NUM_FRAMES, 3, 3)
        folded = x5.permute(0, 2, 1, 3, 4).reshape(-1, c, 3, 3)
        unfold = lambda y: y.reshape(2, NUM_FRAMES, c, 3, 3).permute(0, 2, 1, 3, 4)
        got = unfold(module(folded, num_frames=NUM_FRAMES))
        pe = temporal_position_table(mm.max_len, c)
        want = spec_motion_module(mm.state, name + ".temporal_transformer.", x5, heads, groups, pe)
        ref = want.abs().max().item()
        worst = max(worst, (got - want).abs().max().item() / ref)
        theirs = unfold(plain_modules[name](folded, num_frames=NUM_FRAMES))
        least_change = min(least_change, (theirs - want).abs().max().item() / ref)
        # the formula table equals diffusers' buffer; pos_embed sits where the official code adds it
        their_pe = plain_modules[name].transformer_blocks[0].pos_embed.pe
        assert their_pe.shape == pe.shape and (their_pe - pe).abs().max().item() < 1e-6
        for block in module.transformer_blocks:
            assert isinstance(block.ff.net[0], GEGLU)
        n += 1
    assert worst < 1e-4, worst
    assert least_change > 1e-3, least_change
    print(f"check motion modules ({n}): patched diffusers vs docs/spec.md §2.2 max rel. diff {worst:.2g}; "
          f"unpatched diffusers differs by >= {least_change:.3g} (rel.)")


@torch.no_grad()
def check_resnet(unet: UNetMotionModel, cross_frame: bool) -> None:
    """One patched ResNet (with 1x1 shortcut) against docs/spec.md §1.3 written out."""
    resnet = unet.down_blocks[1].resnets[0]
    g = torch.Generator().manual_seed(SEED + 2)
    c_in = resnet.conv1.in_channels
    x5 = video_like(g, 2, c_in, NUM_FRAMES, 4, 4)
    temb = torch.randn(2, resnet.time_emb_proj.in_features, generator=g)
    unet._frames.value = NUM_FRAMES
    folded = x5.permute(0, 2, 1, 3, 4).reshape(-1, c_in, 4, 4)
    got = resnet(folded, temb.repeat_interleave(NUM_FRAMES, dim=0))

    def inflated(conv, y5):
        b, c, f, h, w = y5.shape
        y = conv(y5.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
        return y.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)

    def norm(m, y5):
        return manual_group_norm(y5, m.num_groups, m.weight, m.bias, m.eps, across_frames=cross_frame)

    h = inflated(resnet.conv1, F.silu(norm(resnet.norm1, x5)))
    h = h + resnet.time_emb_proj(F.silu(temb))[:, :, None, None, None]
    h = inflated(resnet.conv2, F.silu(norm(resnet.norm2, h)))
    want = inflated(resnet.conv_shortcut, x5) + h
    want = want.permute(0, 2, 1, 3, 4).reshape(got.shape)
    err = (got - want).abs().max().item() / want.abs().max().item()
    assert err < 1e-4, err
    assert resnet.norm1.eps == resnet.norm2.eps == 1e-5
    print(f"check ResNet ({'across frames' if cross_frame else 'per frame'} GroupNorm) vs docs/spec.md §1.3: max rel. diff {err:.2g}")


def spec_clip_text(state: dict, ids: torch.Tensor, layers: int, heads: int) -> torch.Tensor:
    """Spec §6.1 written out on the converted (`text_model.`) names: pre-LN layers, causal mask,
    quick-GELU, final LayerNorm."""
    w = lambda name: state["text_model." + name].to(torch.float32)
    n_tok = ids.shape[1]
    h = w("embeddings.token_embedding.weight")[ids] + w("embeddings.position_embedding.weight")[:n_tok]
    c = h.shape[-1]
    d = c // heads
    causal = torch.full((n_tok, n_tok), float("-inf")).triu(1)
    ln = lambda x, name: F.layer_norm(x, (c,), w(name + ".weight"), w(name + ".bias"), eps=1e-5)
    lin = lambda x, name: F.linear(x, w(name + ".weight"), w(name + ".bias"))
    for i in range(layers):
        p = f"encoder.layers.{i}."
        n = ln(h, p + "layer_norm1")
        split = lambda t: t.reshape(t.shape[0], n_tok, heads, d).transpose(1, 2)
        q, k, v = (split(lin(n, p + f"self_attn.{x}_proj")) for x in ("q", "k", "v"))
        o = torch.softmax(q @ k.transpose(-1, -2) * d**-0.5 + causal, dim=-1) @ v
        h = h + lin(o.transpose(1, 2).reshape(h.shape), p + "self_attn.out_proj")
        m = lin(ln(h, p + "layer_norm2"), p + "mlp.fc1")
        h = h + lin(m * torch.sigmoid(1.702 * m), p + "mlp.fc2")
    return ln(h, "final_layer_norm")


@torch.no_grad()
def check_text_encoder(fx: Fixtures, image: ImageModel, inputs: Inputs) -> None:
    t = fx.arch["text_encoder"]
    ids = torch.from_numpy(inputs.te_ids)
    got = encode_text(image.text_encoder, ids)
    want = spec_clip_text(image.te_state, ids, t["num_hidden_layers"], t["num_attention_heads"])
    err = (got - want).abs().max().item() / want.abs().max().item()
    assert err < 1e-5, err
    print(f"check text encoder vs docs/spec.md §6.1 (causal, quick-GELU): max rel. diff {err:.2g}")


def check_norm_eps(unet: UNetMotionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel) -> None:
    """Spec §11.9: ResNet/out GN 1e-5, spatial-transformer and motion GN 1e-6, VAE GN 1e-6, LN 1e-5."""
    for name, m in unet.named_modules():
        if isinstance(m, ResnetBlock2D):
            assert m.norm1.eps == m.norm2.eps == 1e-5, name
        elif isinstance(m, (Transformer2DModel, AnimateDiffTransformer3D)):
            assert m.norm.eps == 1e-6, name
        elif isinstance(m, nn.LayerNorm):
            assert m.eps == 1e-5, name
    assert unet.conv_norm_out.eps == 1e-5
    for name, m in vae.named_modules():
        if isinstance(m, nn.GroupNorm):
            assert m.eps == 1e-6, name
    for name, m in text_encoder.named_modules():
        if isinstance(m, nn.LayerNorm):
            assert m.eps == 1e-5, name
    assert text_encoder.config.hidden_act == "quick_gelu"


@torch.no_grad()
def check_whole_unet_adjustments(fx: Fixtures, image: ImageModel, mm: MotionModuleFile, official: UNetMotionModel, inputs: Inputs) -> None:
    """The UNet output must change with each adjustment (and run the spec checks once per model)."""
    plain = build_unet(fx, image, mm, official=False)
    sample = torch.from_numpy(inputs.unet_sample)
    t = torch.from_numpy(inputs.unet_timestep).long()
    ctx = torch.from_numpy(inputs.unet_context)
    out_plain = unet_forward(plain, sample, t, ctx)
    motion_only = copy.deepcopy(plain)
    motion_only._frames = FrameCount()
    track_frames(motion_only, motion_only._frames)
    apply_official_motion_modules(motion_only, mm.max_len)
    out_motion = unet_forward(motion_only, sample, t, ctx)
    out_official = unet_forward(official, sample, t, ctx)
    scale = out_official.abs().max().item()
    d_motion = (out_motion - out_plain).abs().max().item() / scale
    line = f"check UNet output changes: per-frame motion norm + formula PE {d_motion:.3g} (rel.)"
    assert d_motion > 1e-3, d_motion
    if MOTION_VERSION_TRAITS[mm.version][2]:
        d_v1 = (out_official - out_motion).abs().max().item() / scale
        assert d_v1 > 1e-3, d_v1
        line += f"; v1 cross-frame ResNet/out norms {d_v1:.3g} (rel.)"
    else:
        assert torch.equal(out_official, out_motion)
    print(line)
    # each batch item gets its own timestep (batch items are independent in this UNet)
    for i, t_i in enumerate(t.tolist()):
        alone = unet_forward(official, sample, torch.tensor([t_i, t_i]), ctx)[i]
        err = (alone - out_official[i]).abs().max().item() / scale
        assert err < 1e-5, (i, t_i, err)
    unique = torch.unique(t).numel()
    assert unique == t.numel(), t
    print(f"check per-item timesteps {t.tolist()}: each item equals a run with its timestep everywhere")
    check_motion_modules(fx, official, plain, mm)
    check_resnet(official, cross_frame=MOTION_VERSION_TRAITS[mm.version][2])


def check_diffusers_twins(fx: Fixtures, base: ImageModel, v2: MotionModuleFile) -> None:
    """base_diffusers/ and mm_v2_diffusers.safetensors must hold the tensors our conversion of the
    LDM / official files produces (they validate the fixture tool's two naming paths)."""
    folder = fx.root / "base_diffusers"
    if folder.is_dir():
        ours = {
            "unet": base.unet_state,
            "vae": base.vae.state_dict(),
            "text_encoder": base.te_state,
        }
        for sub, mine in ours.items():
            files = sorted((folder / sub).glob("*.safetensors"))
            if not files:
                fx.note(f"base_diffusers/{sub}: no .safetensors file")
                continue
            theirs = {}
            for p in files:
                theirs.update(load_file(p))
            theirs.pop("text_model.embeddings.position_ids", None)
            keys_a, keys_b = set(mine), set(theirs)
            if keys_a != keys_b:
                fx.note(f"base_diffusers/{sub}: keys differ from the converted base.safetensors: "
                        f"only ours {sorted(keys_a - keys_b)[:5]}, only theirs {sorted(keys_b - keys_a)[:5]}")
            bad = [k for k in keys_a & keys_b if not torch.equal(mine[k].float(), theirs[k].float())]
            if bad:
                fx.note(f"base_diffusers/{sub}: {len(bad)} tensors differ from the converted base.safetensors: {sorted(bad)[:5]}")
            config_path = folder / sub / "config.json"
            if not config_path.is_file():
                fx.note(f"base_diffusers/{sub}: no config.json")
            print(f"  base_diffusers/{sub}: {len(keys_b)} tensors compared")
        check_diffusers_configs(fx, folder)
    else:
        fx.note("no base_diffusers/ folder")
    name = "mm_v2_diffusers.safetensors"
    if (fx.root / name).is_file():
        theirs = load_file(fx.root / name)
        mine = convert_animatediff_checkpoint_to_diffusers(v2.state)
        theirs = {k: v for k, v in theirs.items() if not k.endswith("pos_embed.pe")}
        if set(mine) != set(theirs):
            fx.note(f"{name}: keys differ from diffusers' conversion of mm_v2.ckpt: "
                    f"{sorted(set(mine) ^ set(theirs))[:6]}")
        bad = [k for k in set(mine) & set(theirs) if not torch.equal(mine[k], theirs[k])]
        if bad:
            fx.note(f"{name}: {len(bad)} tensors differ from mm_v2.ckpt: {sorted(bad)[:5]}")
        print(f"  {name}: {len(theirs)} tensors compared")
    else:
        fx.note(f"no {name}")


def check_diffusers_configs(fx: Fixtures, folder: Path) -> None:
    """The config.json files must build models whose parameter names and shapes are ours."""
    built = {
        "unet": (UNet2DConditionModel, UNet2DConditionModel(**unet2d_config(fx.arch))),
        "vae": (AutoencoderKL, AutoencoderKL(**vae_config(fx.arch))),
    }
    for sub, (cls, mine) in built.items():
        path = folder / sub / "config.json"
        if not path.is_file():
            continue
        try:
            theirs = cls.from_config(json.loads(path.read_text()))
        except Exception as e:  # noqa: BLE001 - any failure is a finding
            fx.note(f"base_diffusers/{sub}/config.json does not build a {cls.__name__}: {e}")
            continue
        a = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        if a != b:
            fx.note(f"base_diffusers/{sub}/config.json builds a different model: "
                    f"{sorted(set(a.items()) ^ set(b.items()))[:4]}")
    path = folder / "text_encoder" / "config.json"
    if path.is_file():
        cfg = json.loads(path.read_text())
        mine = clip_config(fx.arch).to_dict()
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "max_position_embeddings", "hidden_act"):
            if key in cfg and cfg[key] != mine[key]:
                fx.note(f"base_diffusers/text_encoder/config.json: {key} = {cfg[key]!r}, arch.json says {mine[key]!r}")


# ----------------------------------------------------------------------------------------------
# Activation table
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def activation_table(unet: UNetMotionModel, inputs: Inputs) -> list[tuple[str, tuple, float, float]]:
    rows: list[tuple[str, tuple, float, float]] = []
    watched = ["conv_in"]
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            watched.append(f"down_blocks.{i}.resnets.{j}")
            if hasattr(block, "attentions"):
                watched.append(f"down_blocks.{i}.attentions.{j}")
            watched.append(f"down_blocks.{i}.motion_modules.{j}")
        if block.downsamplers is not None:
            watched.append(f"down_blocks.{i}.downsamplers.0")
        watched.append(f"down_blocks.{i}")
    mid = unet.mid_block
    watched += ["mid_block.resnets.0", "mid_block.attentions.0"]
    if hasattr(mid, "motion_modules"):
        watched.append("mid_block.motion_modules.0")
    watched += ["mid_block.resnets.1", "mid_block"]
    for i, block in enumerate(unet.up_blocks):
        for j in range(len(block.resnets)):
            watched.append(f"up_blocks.{i}.resnets.{j}")
            if hasattr(block, "attentions"):
                watched.append(f"up_blocks.{i}.attentions.{j}")
            watched.append(f"up_blocks.{i}.motion_modules.{j}")
        if block.upsamplers is not None:
            watched.append(f"up_blocks.{i}.upsamplers.0")
        watched.append(f"up_blocks.{i}")
    watched += ["conv_norm_out", "conv_out"]
    modules = dict(unet.named_modules())
    handles = []
    for name in watched:
        def hook(_m, _args, out, name=name):
            t = out[0] if isinstance(out, tuple) else out
            if hasattr(t, "sample"):
                t = t.sample
            rows.append((name, tuple(t.shape), t.abs().max().item(), t.std().item()))
        handles.append(modules[name].register_forward_hook(hook))
    try:
        unet_forward(unet, torch.from_numpy(inputs.unet_sample), torch.from_numpy(inputs.unet_timestep).long(),
                     torch.from_numpy(inputs.unet_context))
    finally:
        for h in handles:
            h.remove()
    return rows


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def stats(name: str, a: np.ndarray) -> str:
    x = a.astype(np.float64)
    return f"{name} {list(a.shape)} max|x| {np.abs(x).max():.4g} std {x.std():.4g}"


def golden_arrays(inputs: Inputs, image: ImageModel, unet: UNetMotionModel, scheduler: DDIMScheduler,
                  trace: list | None = None) -> dict:
    ids = torch.from_numpy(inputs.te_ids)
    te_out = encode_text(image.text_encoder, ids)
    noise = unet_forward(unet, torch.from_numpy(inputs.unet_sample), torch.from_numpy(inputs.unet_timestep).long(),
                         torch.from_numpy(inputs.unet_context))
    vae_raw = decode_frames(image.vae, torch.from_numpy(inputs.vae_latents))

    uncond_ids, cond_ids = ids[0:1], ids[1:2]
    context = torch.cat([encode_text(image.text_encoder, uncond_ids), encode_text(image.text_encoder, cond_ids)])
    final = ddim_sample(unet, scheduler, context, torch.from_numpy(inputs.ddim_latents), GUIDANCE, trace)
    b, c, f, h, w = final.shape
    frames = decode_frames(image.vae, final.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))  # (b f) c h w
    arrays = {
        "te_input_ids": inputs.te_ids,
        "te_last_hidden_state": te_out.numpy(),
        "unet_sample": inputs.unet_sample,
        "unet_timestep": inputs.unet_timestep,
        "unet_encoder_hidden_states": inputs.unet_context,
        "unet_noise_pred": noise.numpy(),
        "vae_latent_sample": inputs.vae_latents,
        "vae_sample": vae_raw.numpy(),
        "ddim_uncond_ids": uncond_ids.numpy(),
        "ddim_cond_ids": cond_ids.numpy(),
        "ddim_init_latents": inputs.ddim_latents,
        "ddim_timesteps": scheduler.timesteps.numpy().astype(np.int64),
        "ddim_guidance": np.array(GUIDANCE, dtype=np.float32),
        "ddim_final_latents": final.numpy(),
        "ddim_frames_u8": frames_to_uint8(frames),
    }
    return {k: np.asarray(a, order="C") for k, a in arrays.items()}


EXPECTED_DTYPES = {"te_input_ids": np.int64, "ddim_uncond_ids": np.int64, "ddim_cond_ids": np.int64,
                   "ddim_timesteps": np.int64, "ddim_frames_u8": np.uint8, "meta": np.uint8}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=Path("target/fixtures"))
    parser.add_argument("--out", type=Path, default=Path("tests/goldens"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--only", nargs="*", default=None, help="golden names to write, e.g. base_v2")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.set_grad_enabled(False)
    packages = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    print(f"packages: {packages}, numpy {np.__version__}")

    fx = Fixtures(args.fixtures)
    fx.check_manifest()
    args.out.mkdir(parents=True, exist_ok=True)
    check_group_norm_modules()
    scheduler = make_scheduler()
    print(f"DDIM timesteps {scheduler.timesteps.tolist()} (asserted == {EXPECTED_DDIM_TIMESTEPS})")
    inputs = make_inputs(args.seed, fx.arch)

    print("loading fixtures")
    motion = {v: load_motion_module(fx, v) for v in MOTION_VERSIONS}
    base = load_image_model(fx, "base.safetensors", torch.float32)
    personalized = load_image_model(fx, "personalized.safetensors", torch.float16)
    lora = load_file(fx.path("lora.safetensors"))
    lora_dtypes = {str(v.dtype) for v in lora.values()}
    print(f"  lora.safetensors: {len(lora)} tensors {sorted(lora_dtypes)}")
    check_diffusers_twins(fx, base, motion["v2"])

    written = []
    for variant in VARIANTS:
        for version in MOTION_VERSIONS:
            name = f"{variant}_{version}"
            if args.only is not None and name not in args.only:
                continue
            print(f"\n=== {name}")
            mm = motion[version]
            image = base if variant == "base" else personalized
            unet = build_unet(fx, image, mm)
            files = ["arch.json", *image.files, *mm.files]
            scaling = None
            if variant.startswith("personalized_lora_"):
                scaling = variant.rsplit("_", 1)[1]
                image = ImageModel(image.name, image.unet_state, image.te_state, image.vae,
                                   copy.deepcopy(image.text_encoder), image.files)
                report = merge_kohya_lora(unet, image.text_encoder, lora, LORA_MULTIPLIER, scaling)
                files.append("lora.safetensors")
                print(f"  LoRA ({scaling}, m={LORA_MULTIPLIER}): {report.unet_modules} UNet + {report.te_modules} "
                      f"text-encoder modules {report.kinds}, ranks {sorted(report.ranks)}, alphas {sorted(report.alphas)}")
            else:
                check_whole_unet_adjustments(fx, image, mm, unet, inputs)
                check_text_encoder(fx, image, inputs)
                check_norm_eps(unet, image.vae, image.text_encoder)

            trace: list = []
            arrays = golden_arrays(inputs, image, unet, scheduler, trace)
            meta = {
                "variant": variant,
                "motion_version": version,
                "lora_scaling": scaling,
                "lora_multiplier": LORA_MULTIPLIER if scaling else None,
                "fixture_sha256": {f: fx.sha256(f) for f in files},
                "tool": TOOL,
                "packages": packages,
                "seed": args.seed,
            }
            arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
            for k, a in arrays.items():
                want = EXPECTED_DTYPES.get(k, np.float32)
                assert a.dtype == want, (k, a.dtype)
                assert a.flags["C_CONTIGUOUS"], k
                if a.dtype == np.float32:
                    assert np.isfinite(a).all(), k
            path = args.out / f"{name}.npz"
            # Stored (uncompressed) entries: random floats do not compress, and the Rust side reads
            # them with ndarray-npy's plain "npz" feature (its zip has no deflate there).
            np.savez(path, **arrays)
            written.append(path)
            for k, a in arrays.items():
                if k != "meta" and a.dtype == np.float32 and a.ndim > 0 and not k.startswith(("unet_sample", "unet_enc", "vae_latent", "ddim_init")):
                    print(f"  {stats(k, a)}")
            for t, sd_u, sd_d, eps_max, x_max, x_sd in trace:
                print(f"  DDIM t={t:3d}: std eps_u {sd_u:.3g}, std (eps_c-eps_u) {sd_d:.3g}, max|eps| {eps_max:.3g}"
                      f" -> max|x| {x_max:.3g} std x {x_sd:.3g}")
            u8 = arrays["ddim_frames_u8"]
            print(f"  ddim_frames_u8 {list(u8.shape)} min {u8.min()} max {u8.max()} mean {u8.mean():.1f}, "
                  f"saturated {np.mean((u8 == 0) | (u8 == 255)):.1%}")
            print(f"  wrote {path} ({path.stat().st_size} bytes)")

            if name == "base_v2":
                print("  activation table (UNet golden input, base/v2):")
                print(f"    {'module':40s} {'shape':24s} {'max|x|':>9s} {'std':>9s}")
                for row_name, shape, mx, sd in activation_table(unet, inputs):
                    flag = "  <-- large" if mx > 50 else ("  <-- collapsed" if sd < 1e-3 else "")
                    print(f"    {row_name:40s} {str(list(shape)):24s} {mx:9.4g} {sd:9.4g}{flag}")

    print("\nwritten:")
    for p in written:
        print(f"  {p} {p.stat().st_size} bytes")
    if fx.findings:
        print("\nfixture findings:")
        for f in fx.findings:
            print(f"  - {f}")
    else:
        print("\nfixture findings: none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
