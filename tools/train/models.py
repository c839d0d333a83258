"""The micro model: SD1.5 topology with tiny widths (arch.json), built with diffusers/transformers
modules and the official AnimateDiff semantics where diffusers differs (the adjustments of
tools/reference/make_goldens.py, imported from there: per-frame motion-module GroupNorm, formula
positional table, text context repeated per frame). Also the LDM / official-layout key names for
export, checked by a round trip through diffusers' own LDM converters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import make_goldens as ref  # noqa: E402  (config builders and the official-semantics modules)

from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel  # noqa: E402
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D  # noqa: E402
from transformers import CLIPTextModel  # noqa: E402

BOS, EOS = 49406, 49407
MOTION_MAX_LEN = 32  # v3-style module: PE length 32, no mid-block module, per-frame ResNet norms

# The architecture: SD1.5 topology (4 UNet levels, 2 layers per block, attention in the first three
# levels, 4 VAE levels = 8x downsampling, CLIP-shaped text encoder with the full 49408-token
# vocabulary and 77 positions), tiny widths. Written next to the trained files as arch.json.
ARCH = {
    "unet": {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [32, 32, 32, 32],
        "layers_per_block": 2,
        "attention_levels": [True, True, True, False],
        "transformer_layers_per_block": 1,
        "num_attention_heads": 4,
        "cross_attention_dim": 32,
        "norm_num_groups": 16,
        "time_embed_dim": 128,
        "use_linear_projection": False,
    },
    "text_encoder": {
        "vocab_size": 49408,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 128,
        "max_position_embeddings": 77,
    },
    "vae": {
        "block_out_channels": [16, 32, 32, 32],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "scaling_factor": 0.18215,
    },
    "motion_module": {"num_attention_heads": 4, "norm_num_groups": 16},
}


def make_vae() -> AutoencoderKL:
    return AutoencoderKL(**ref.vae_config(ARCH))


def make_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(ref.clip_config(ARCH))


def make_unet2d() -> UNet2DConditionModel:
    return UNet2DConditionModel(**ref.unet2d_config(ARCH))


def make_unet3d(unet2d: UNet2DConditionModel, zero_init: bool = True) -> UNetMotionModel:
    """UNetMotionModel = the image UNet + motion modules at every site of the 4 levels (v3 layout),
    made official (per-frame module norm, formula PE of length 32). The paper zero-initialises
    each module's output projection so that training starts from the image model."""
    adapter = MotionAdapter(**ref.motion_adapter_config(ARCH, MOTION_MAX_LEN, False))
    unet = UNetMotionModel.from_unet2d(unet2d, adapter, load_weights=True)
    n = ref.apply_official_motion_modules(unet, MOTION_MAX_LEN)
    assert n == 20, n
    assert type(unet.conv_norm_out) is nn.GroupNorm  # per-frame ResNet / out norms (v2/v3)
    if zero_init:
        for m in unet.modules():
            if isinstance(m, AnimateDiffTransformer3D):
                nn.init.zeros_(m.proj_out.weight)
                nn.init.zeros_(m.proj_out.bias)
    return unet


def unet3d_forward(unet: UNetMotionModel, sample: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
    """sample (B, C, F, h, w), t (B,), ctx (B, 77, D) repeated per frame 'b n c -> (b f) n c'."""
    return unet(sample, t, encoder_hidden_states=ctx.repeat_interleave(sample.shape[2], dim=0)).sample


def motion_state(unet: UNetMotionModel) -> dict:
    return {k: v for k, v in unet.state_dict().items() if ".motion_modules." in k and not k.endswith("pos_embed.pe")}


def spatial_state(unet: UNetMotionModel) -> dict:
    return {k: v for k, v in unet.state_dict().items() if ".motion_modules." not in k}


# ----------------------------------------------------------------------------------------------
# diffusers names -> LDM single-file names (docs/spec.md §4.2-§4.4), official motion-module names (§2.4)
# ----------------------------------------------------------------------------------------------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _resnet(rest: str) -> str:
    sub, _, tail = rest.partition(".")
    return f"{_RESNET[sub]}.{tail}"


def unet_to_ldm(key: str, layers: int = 2) -> str:
    """diffusers UNet2DConditionModel key -> LDM key (without model.diffusion_model.)."""
    p = key.split(".")
    simple = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    head = ".".join(p[:2]) if p[0] == "time_embedding" else p[0]
    if head in simple:
        return simple[head] + key[len(head):]
    if p[0] == "down_blocks":
        i = int(p[1])
        if p[2] == "downsamplers":  # down_blocks.i.downsamplers.0.conv.*
            return f"input_blocks.{(i + 1) * (layers + 1)}.0.op." + ".".join(p[5:])
        j = int(p[3])
        k = 1 + i * (layers + 1) + j
        rest = ".".join(p[4:])
        return f"input_blocks.{k}.0.{_resnet(rest)}" if p[2] == "resnets" else f"input_blocks.{k}.1.{rest}"
    if p[0] == "mid_block":
        j = int(p[2])
        rest = ".".join(p[3:])
        return f"middle_block.{2 * j}.{_resnet(rest)}" if p[1] == "resnets" else f"middle_block.1.{rest}"
    if p[0] == "up_blocks":
        i = int(p[1])
        if p[2] == "upsamplers":  # up_blocks.i.upsamplers.0.conv.*
            k = i * (layers + 1) + layers
            has_attn = f"up_blocks.{i}" in _UP_WITH_ATTN
            return f"output_blocks.{k}.{2 if has_attn else 1}.conv." + ".".join(p[5:])
        j = int(p[3])
        k = i * (layers + 1) + j
        rest = ".".join(p[4:])
        return f"output_blocks.{k}.0.{_resnet(rest)}" if p[2] == "resnets" else f"output_blocks.{k}.1.{rest}"
    raise KeyError(key)


_UP_WITH_ATTN: set[str] = set()


def unet_state_to_ldm(state: dict) -> dict:
    _UP_WITH_ATTN.clear()
    _UP_WITH_ATTN.update(".".join(k.split(".")[:2]) for k in state if k.startswith("up_blocks.") and ".attentions." in k)
    layers = ARCH["unet"]["layers_per_block"]
    return {"model.diffusion_model." + unet_to_ldm(k, layers): v for k, v in state.items()}


_VAE_RES = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(key: str, n_levels: int) -> str:
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv"):
        return key
    side = p[0]  # encoder / decoder
    if p[1] in ("conv_in", "conv_out"):
        return key
    if p[1] == "conv_norm_out":
        return f"{side}.norm_out." + ".".join(p[2:])
    if p[1] == "mid_block":
        if p[2] == "resnets":
            j = int(p[3])
            sub = _VAE_RES.get(p[4], p[4])
            return f"{side}.mid.block_{j + 1}.{sub}." + ".".join(p[5:])
        rest = ".".join(p[4:])  # attentions.0.<rest>
        for d, l in _VAE_ATTN.items():
            if rest.startswith(d + "."):
                return f"{side}.mid.attn_1.{l}." + rest[len(d) + 1:]
        raise KeyError(key)
    if p[1] in ("down_blocks", "up_blocks"):
        i = int(p[2])
        level = i if side == "encoder" else n_levels - 1 - i
        lvl = "down" if side == "encoder" else "up"
        if p[3] in ("downsamplers", "upsamplers"):
            return f"{side}.{lvl}.{level}.{'downsample' if side == 'encoder' else 'upsample'}.conv." + ".".join(p[6:])
        j = int(p[4])
        sub = _VAE_RES.get(p[5], p[5])
        return f"{side}.{lvl}.{level}.block.{j}.{sub}." + ".".join(p[6:])
    raise KeyError(key)


def vae_state_to_ldm(state: dict) -> dict:
    n = len(ARCH["vae"]["block_out_channels"])
    out = {}
    for k, v in state.items():
        lk = vae_to_ldm(k, n)
        if ".mid.attn_1." in lk and lk.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM attention projections are 1x1 convs
        out["first_stage_model." + lk] = v
    return out


def te_state_to_ldm(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return out


def motion_to_official(key: str) -> str:
    """diffusers UNetMotionModel motion key -> official AnimateDiff key (docs/spec.md §2.4/§2.5)."""
    site, _, rest = key.partition(".motion_modules.")
    j, _, rest = rest.partition(".")
    base = f"{site}.motion_modules.{j}.temporal_transformer."
    names = [("transformer_blocks.0.attn1.", "transformer_blocks.0.attention_blocks.0."),
             ("transformer_blocks.0.attn2.", "transformer_blocks.0.attention_blocks.1."),
             ("transformer_blocks.0.norm1.", "transformer_blocks.0.norms.0."),
             ("transformer_blocks.0.norm2.", "transformer_blocks.0.norms.1."),
             ("transformer_blocks.0.norm3.", "transformer_blocks.0.ff_norm."),
             ("transformer_blocks.0.ff.", "transformer_blocks.0.ff.")]
    for d, o in names:
        if rest.startswith(d):
            return base + o + rest[len(d):]
    if rest.split(".")[0] in ("norm", "proj_in", "proj_out"):
        return base + rest
    raise KeyError(key)


def motion_state_to_official(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        out[motion_to_official(k)] = v
    sites = sorted({k.split(".temporal_transformer.")[0] for k in out})
    for s in sites:
        c = out[f"{s}.temporal_transformer.proj_in.weight"].shape[0]
        pe = ref.temporal_position_table(MOTION_MAX_LEN, c)
        for a in (0, 1):
            out[f"{s}.temporal_transformer.transformer_blocks.0.attention_blocks.{a}.pos_encoder.pe"] = pe
    return out


def check_round_trips(unet2d, vae, te, unet3d) -> None:
    """Our LDM/official names, converted back by diffusers' own converters, give the same tensors."""
    from diffusers.loaders.single_file_utils import (convert_animatediff_checkpoint_to_diffusers,
                                                     convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)

    def same(a: dict, b: dict, what: str):
        assert set(a) == set(b), (what, sorted(set(a) ^ set(b))[:6])
        for k in a:
            assert torch.equal(a[k].reshape(b[k].shape), b[k]), (what, k)

    us = unet2d.state_dict()
    same(convert_ldm_unet_checkpoint(unet_state_to_ldm(us), unet2d.config), us, "unet")
    vs = vae.state_dict()
    same(convert_ldm_vae_checkpoint(vae_state_to_ldm(vs), vae.config), vs, "vae")
    ts = {("text_model." + k if not k.startswith("text_model.") else k): v for k, v in te.state_dict().items()
          if not k.endswith("position_ids")}
    back = convert_ldm_clip_checkpoint(te_state_to_ldm(ts))
    back.pop("text_model.embeddings.position_ids", None)
    same(back, ts, "text encoder")
    ms = motion_state(unet3d)
    back = convert_animatediff_checkpoint_to_diffusers(motion_state_to_official(ms))
    back = {k: v for k, v in back.items() if not k.endswith("pos_embed.pe")}
    same(back, ms, "motion module")
