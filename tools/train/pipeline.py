"""The official AnimateDiff pipeline in PyTorch, for the exported demo files: prompt tokens as the
official pipeline / our runner make them, the fp16 LDM single files and official motion module
loaded through diffusers' own LDM / AnimateDiff converters into the official-semantics model
(models.py), and DDIM + CFG sampling with the linear schedule. parity.py compares this with our
runner; train.py's import and eval stages use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.loaders.single_file_utils import (convert_animatediff_checkpoint_to_diffusers,
                                                 convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)
from diffusers.models.attention_processor import AttnProcessor
from safetensors.torch import load_file

import models as M

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE.parents[1] / "crates" / "build" / "assets" / "clip_tokenizer.json"


def tokenize(texts: list[str]) -> torch.Tensor:
    """As the official pipeline / our runner: [BOS, tokens..., EOS] padded with EOS to 77."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    out = torch.full((len(texts), 77), M.EOS, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = tok.encode(t).ids
        assert ids[0] == M.BOS and ids[-1] == M.EOS, ids
        out[i, : len(ids)] = torch.tensor(ids[:77])
    return out


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
    """The exported demo model (unet3d, vae, te), in eval mode with the plain attention processor."""
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
    """DDIM with classifier-free guidance from `latents` (1, 4, F, h, w): the final latents and the
    decoded frames (F, H, W, 3) uint8."""
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
