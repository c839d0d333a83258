#!/usr/bin/env python3
"""Our runner vs PyTorch on the trained demo files.

Loads the exported files exactly as stored (fp16 LDM single file, fp16 official motion module)
through diffusers' own LDM / AnimateDiff converters into the official-semantics PyTorch model
(tools/train/models.py), samples DDIM + CFG from the same initial latents the Rust runner was given
(`animate --latents-in`), and compares the final latents and the uint8 frames with the runner's
(`--latents-out`, PNG frames).

  tools/train/parity.py --assets crates/cli/assets/demo --latents-in in.npy --rust-latents out.npy \
      --rust-frames frames_dir --prompt "a red circle moving left" --steps 10 [--personalized]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.loaders.single_file_utils import (convert_animatediff_checkpoint_to_diffusers,
                                                 convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)
from diffusers.models.attention_processor import AttnProcessor
from PIL import Image
from safetensors.torch import load_file

import models as M
from train import tokenize


def load_image_model(assets: Path, personalized: bool):
    """(unet2d, vae, te) from the fp16 LDM single files, through diffusers' own converters."""
    base = {k: v.float() for k, v in load_file(assets / "base.safetensors").items()}
    unet_src = {k: v.float() for k, v in load_file(assets / "personalized.safetensors").items()} if personalized else base
    unet2d = M.make_unet2d()
    unet2d.load_state_dict(convert_ldm_unet_checkpoint(unet_src, unet2d.config))
    vae = M.make_vae()
    vae.load_state_dict(convert_ldm_vae_checkpoint(base, vae.config))
    te = M.make_text_encoder()
    ts = convert_ldm_clip_checkpoint(base)
    ts.pop("text_model.embeddings.position_ids", None)
    prefix = M.ref.clip_prefix(te)
    te.load_state_dict({k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in ts.items()})
    return unet2d, vae, te


def load_motion_state(assets: Path) -> dict:
    """The official-layout mm.ckpt as diffusers UNetMotionModel keys (fp32, no pe buffers)."""
    mm = torch.load(assets / "mm.ckpt", weights_only=True)
    return {k: v.float() for k, v in convert_animatediff_checkpoint_to_diffusers(mm).items() if not k.endswith("pos_embed.pe")}


def load(assets: Path, personalized: bool):
    unet2d, vae, te = load_image_model(assets, personalized)
    unet = M.make_unet3d(unet2d, zero_init=False)
    missing, unexpected = unet.load_state_dict(load_motion_state(assets), strict=False)
    assert not unexpected and all(".motion_modules." not in k or k.endswith("pos_embed.pe") for k in missing), unexpected
    for m in (unet, vae):
        m.set_attn_processor(AttnProcessor())
    for m in (unet, vae, te):
        m.eval()
    return unet, vae, te


@torch.no_grad()
def sample(unet, vae, te, prompt: str, latents: torch.Tensor, steps: int, guidance: float):
    sch = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear",
                        steps_offset=1, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading")
    sch.set_timesteps(steps)
    ctx = te(tokenize(["", prompt])).last_hidden_state
    x = latents
    for t in sch.timesteps:
        eps = M.unet3d_forward(unet, torch.cat([x, x]), torch.full((2,), int(t)), ctx)
        eu, ec = eps.chunk(2)
        x = sch.step(eu + guidance * (ec - eu), t, x, eta=0.0).prev_sample
    z = x[0].permute(1, 0, 2, 3) / 0.18215  # (F, 4, h, w)
    raw = torch.cat([vae.decode(z[i : i + 1]).sample for i in range(z.shape[0])])
    frames = ((raw / 2 + 0.5).clamp(0, 1) * 255).numpy().astype(np.uint8)  # truncation, as official
    return x, frames.transpose(0, 2, 3, 1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--assets", type=Path, default=Path("crates/cli/assets/demo"))
    p.add_argument("--latents-in", type=Path, required=True)
    p.add_argument("--rust-latents", type=Path, required=True)
    p.add_argument("--rust-frames", type=Path, required=True)
    p.add_argument("--prompt", default="a red circle moving left")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--personalized", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(2)
    unet, vae, te = load(a.assets, a.personalized)
    lat = torch.from_numpy(np.load(a.latents_in)).float()
    x, frames = sample(unet, vae, te, a.prompt, lat, a.steps, a.guidance)
    rust = torch.from_numpy(np.load(a.rust_latents)).float()
    err = (x - rust).abs().max().item()
    print(f"final latents: max |torch - ours| = {err:.3g}, max |torch| = {x.abs().max().item():.3g}, "
          f"relative {err / x.abs().max().item():.3g}")
    pngs = sorted(a.rust_frames.glob("*.png"))
    assert len(pngs) == frames.shape[0], (len(pngs), frames.shape)
    ours = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in pngs])
    d = np.abs(ours.astype(int) - frames.astype(int))
    print(f"frames (uint8): max |diff| = {d.max()}, pixels differing: {(d > 0).mean() * 100:.3f}%")


if __name__ == "__main__":
    main()
