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
from PIL import Image

from pipeline import load, sample


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
