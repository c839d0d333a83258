#!/usr/bin/env python3
"""Trains the micro AnimateDiff (tools/train/README.md), stage by stage, into --work:

  vae       VAE on single 64x64 frames of both styles (MSE + small KL)
  encode    latents of the clip datasets with the trained VAE (cached .pt)
  image     text encoder + UNet jointly on single frames of the base style (epsilon, linear betas)
  motion    motion modules on 16-frame clips, image model frozen (the paper's stage, linear betas)
  personal  UNet fine-tuned on single frames of the "personal" style (no video)
  export    base.safetensors (LDM keys, fp16), personalized.safetensors (UNet only, fp16),
            mm.ckpt (official layout, fp16), mm_off.ckpt (output projections zero = module removed),
            arch.json; plus losses.png
  eval      direction success rate (PyTorch sampling, the Rust tracker's rule); probe: how much
            the noise prediction depends on the direction word, per noise level
  motion2   continues motion.pt (the ablations of README "What made the direction learnable":
            --t-min, --x0-weight); import: committed files back into checkpoints

Each stage reads the previous stages' files from --work and writes its own; losses go to
--work/losses.json. Seeds are fixed per stage. All stages run on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data
import models as M
from pipeline import load_image_model, load_motion_state, sample, tokenize

SEED = 20261126
DATA_SEED = 7


def linear_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0)


class Log:
    def __init__(self, work: Path, stage: str):
        self.path = work / "losses.json"
        self.all = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.stage = stage
        self.all[stage] = {"step": [], "loss": []}
        self.t0 = time.time()
        self.acc: list[float] = []

    def add(self, step: int, loss: float, every: int = 50):
        self.acc.append(loss)
        if (step + 1) % every == 0:
            m = float(np.mean(self.acc))
            self.acc = []
            self.all[self.stage]["step"].append(step + 1)
            self.all[self.stage]["loss"].append(m)
            print(f"[{self.stage}] step {step + 1} loss {m:.5f} ({time.time() - self.t0:.0f}s)", flush=True)

    def done(self, **extra):
        if self.path.exists():  # another stage may have finished meanwhile
            mine = self.all[self.stage]
            self.all = json.loads(self.path.read_text())
            self.all[self.stage] = mine
        self.all[self.stage]["seconds"] = round(time.time() - self.t0, 1)
        self.all[self.stage].update(extra)
        self.path.write_text(json.dumps(self.all, indent=1))


def captions_for(cap_idx: torch.Tensor, n_items: int, batch: int, empty: int, gen: torch.Generator):
    """A batch of item indices and their caption indices, 10 % replaced by the empty caption (so
    that the model also learns the unconditional prediction classifier-free guidance needs)."""
    pick = torch.randint(0, n_items, (batch,), generator=gen)
    c = cap_idx[pick]
    drop = torch.rand(batch, generator=gen) < 0.1
    return pick, torch.where(drop, torch.full_like(c, empty), c)


def update(opt: torch.optim.Optimizer, params: list, loss: torch.Tensor, lr: float) -> None:
    """One AdamW step at learning rate `lr`, gradients clipped to norm 1."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


_STOP = []


def stoppable(steps: int):
    """range(steps) that ends early, keeping what was trained, on SIGUSR1 (kill -USR1 <pid>)."""
    import signal

    signal.signal(signal.SIGUSR1, lambda *_: _STOP.append(1))
    for step in range(steps):
        if _STOP:
            print(f"stopped early by SIGUSR1 after {step} steps", flush=True)
            return
        yield step


def lr_at(step: int, steps: int, peak: float, warm: int = 100) -> float:
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


# ----------------------------------------------------------------------------------------------


def stage_vae(work: Path, steps: int, batch: int, resume: bool, crop: int, lr: float):
    """Phase 1 (from scratch): random crops, posterior samples, small KL. Phase 2 (--resume):
    whole 64x64 frames, latent mean plus small fixed noise (sharper decoder)."""
    torch.manual_seed(SEED + (7 if resume else 0))
    vae = M.make_vae()
    if resume:
        vae.load_state_dict(torch.load(work / "vae.pt"))
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    log = Log(work, "vae2" if resume else "vae")
    rng = np.random.default_rng(SEED)
    for step in range(steps):
        imgs = []
        for _ in range(batch):
            style = "base" if rng.random() < 0.5 else "personal"
            img, _ = data.frame(DATA_SEED + 1000, int(rng.integers(1 << 30)), style)
            y, x = rng.integers(0, 64 - crop + 1, size=2)  # random crops: the VAE is convolutional
            imgs.append(img[y : y + crop, x : x + crop])
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) * 2 - 1
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        post = vae.encode(x).latent_dist
        z = post.mean + 0.02 * post.mean.std().detach() * torch.randn_like(post.mean) if resume else post.sample()
        rec = vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = post.kl().mean() / (4 * 8 * 8)
        loss = mse + (0.0 if resume else 1e-4) * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        log.add(step, mse.item())
    # Fold a scale into quant_conv / post_quant_conv so that the latent mean times 0.18215 has unit
    # standard deviation (the runner and the official pipeline use the fixed SD factor 0.18215).
    with torch.no_grad():
        x = torch.from_numpy(np.stack([data.frame(DATA_SEED + 2000, i, ("base", "personal")[i % 2])[0]
                                       for i in range(256)])).permute(0, 3, 1, 2) * 2 - 1
        std = vae.encode(x).latent_dist.mean.std().item()
        s = 1.0 / (std * 0.18215)  # new latent = s * old latent
        vae.quant_conv.weight[:4] *= s
        vae.quant_conv.bias[:4] *= s
        vae.quant_conv.bias[4:] += 2 * math.log(s)  # logvar of the scaled posterior
        vae.post_quant_conv.weight /= s
        new_std = vae.encode(x).latent_dist.mean.std().item()
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample
        mse = F.mse_loss(rec, x).item()
    print(f"[vae] latent std {std:.3f} -> {new_std:.3f} (x 0.18215 = {new_std * 0.18215:.3f}); eval MSE {mse:.5f}")
    log.done(latent_std_before=std, eval_mse=mse)
    torch.save(vae.state_dict(), work / "vae.pt")


def stage_encode(work: Path, n_clips: int, style: str):
    vae = M.make_vae()
    vae.load_state_dict(torch.load(work / "vae.pt"))
    vae.eval()
    t0 = time.time()
    lat, caps = [], []
    with torch.no_grad():
        for i in range(n_clips):
            frames, text, _ = data.clip(DATA_SEED, i, style)
            x = torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1
            z = vae.encode(x).latent_dist.mean * 0.18215  # (F, 4, 8, 8)
            lat.append(z.permute(1, 0, 2, 3).half())  # (4, F, 8, 8)
            caps.append(text)
    torch.save({"latents": torch.stack(lat), "captions": caps}, work / f"latents_{style}.pt")
    print(f"[encode] {n_clips} {style} clips in {time.time() - t0:.0f}s")


def load_latents(work: Path, style: str):
    d = torch.load(work / f"latents_{style}.pt")
    caps = sorted(set(d["captions"]))
    ids = tokenize(caps + [""])
    index = {c: i for i, c in enumerate(caps)}
    cap_idx = torch.tensor([index[c] for c in d["captions"]])
    return d["latents"].float(), cap_idx, ids  # ids[-1] = the empty prompt


def diffusion_loss(eps_model, z0: torch.Tensor, ctx: torch.Tensor, ac: torch.Tensor, gen: torch.Generator, t_min: int = 0,
                   x0_weight: float = 0.0):
    """Epsilon MSE at uniform timesteps. With x0_weight = g > 0 each sample's loss is weighted by
    min(1/SNR(t), g) (the error of the implied x0 estimate, clipped), which shifts the weight to
    the noisy timesteps where the layout, and so the direction of motion, is decided."""
    t = torch.randint(t_min, 1000, (z0.shape[0],), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    a = ac[t].reshape(-1, *([1] * (z0.ndim - 1)))
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    per_sample = ((eps_model(zt, t, ctx) - noise) ** 2).flatten(1).mean(1)
    if x0_weight > 0:
        w = ((1 - ac[t]) / ac[t]).clamp(max=x0_weight)
        return (w * per_sample).sum() / w.sum()
    return per_sample.mean()


def stage_image(work: Path, steps: int, batch: int, style: str, name: str, init: str | None, lr: float,
                train_te: bool | None = None, only: tuple[str, ...] = ()):
    """Trains the image model on single frames; `only`: train just the UNet parameters whose names
    start with one of these prefixes (the rest stays as initialised)."""
    torch.manual_seed(SEED + 1)
    gen = torch.Generator().manual_seed(SEED + 2)
    lat, cap_idx, ids = load_latents(work, style)
    frames = lat.permute(0, 2, 1, 3, 4).reshape(-1, 4, 8, 8)  # every frame of every clip
    frame_cap = cap_idx.repeat_interleave(lat.shape[2])
    unet = M.make_unet2d()
    te = M.make_text_encoder()
    if init:
        st = torch.load(work / f"{init}.pt")
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["te"])
    if train_te is None:
        train_te = init is None  # the personalised model keeps the base text encoder (UNet-only file)
    unet_params = [p for n, p in unet.named_parameters() if not only or n.startswith(only)]
    unet.requires_grad_(False)
    for p in unet_params:
        p.requires_grad_(True)
    params = unet_params + (list(te.parameters()) if train_te else [])
    te.requires_grad_(train_te)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ac = linear_alphas_cumprod()
    log = Log(work, name)
    for step in stoppable(steps):
        pick, c = captions_for(frame_cap, frames.shape[0], batch, ids.shape[0] - 1, gen)
        ctx = te(ids[c]).last_hidden_state
        loss = diffusion_loss(lambda x, t, e: unet(x, t, encoder_hidden_states=e).sample, frames[pick], ctx, ac, gen)
        update(opt, params, loss, lr_at(step, steps, lr))
        log.add(step, loss.item())
        if (step + 1) % 500 == 0:  # a checkpoint to evaluate while training goes on
            torch.save({"unet": unet.state_dict(), "te": te.state_dict()}, work / f"{name}.pt")
    log.done(batch=batch, lr=lr, style=style)
    torch.save({"unet": unet.state_dict(), "te": te.state_dict()}, work / f"{name}.pt")


def load_trained(work: Path, unet: str = "image", motion: bool = True):
    """The checkpoints in `work` as models: (unet2d, text encoder, unet3d). The image UNet is
    `unet`.pt's ("image" or "personal"), the text encoder always image.pt's; the motion UNet has
    the trained motion modules of motion.pt, or (motion=False) zero-initialised ones, which leave
    every frame independent. Built in the order the motion stage's seeded initialisation expects."""
    img = torch.load(work / "image.pt")
    unet2d = M.make_unet2d()
    unet2d.load_state_dict((img if unet == "image" else torch.load(work / f"{unet}.pt"))["unet"])
    te = M.make_text_encoder()
    te.load_state_dict(img["te"])
    unet3d = M.make_unet3d(unet2d, zero_init=not motion)
    if motion:
        missing, unexpected = unet3d.load_state_dict(torch.load(work / "motion.pt"), strict=False)
        assert not unexpected and all(".motion_modules." not in k or k.endswith("pos_embed.pe") for k in missing)
    return unet2d, te, unet3d


def stage_motion(work: Path, steps: int, batch: int, lr: float, resume: bool = False, t_min: int = 0, x0_weight: float = 0.0):
    torch.manual_seed(SEED + 3)
    gen = torch.Generator().manual_seed(SEED + 4)
    lat, cap_idx, ids = load_latents(work, "base")
    # resume: continue from motion.pt (e.g. after the image model was trained further)
    _, te, unet = load_trained(work, motion=resume)
    te.requires_grad_(False)
    unet.freeze_unet2d_params()
    params = [p for n, p in unet.named_parameters() if p.requires_grad]
    assert all(".motion_modules." in n for n, p in unet.named_parameters() if p.requires_grad)
    print(f"[motion] training {sum(p.numel() for p in params)} motion-module parameters; image model frozen")
    with torch.no_grad():
        all_ctx = te(ids).last_hidden_state
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ac = linear_alphas_cumprod()
    log = Log(work, "motion2" if resume else "motion")
    for step in stoppable(steps):
        pick, c = captions_for(cap_idx, lat.shape[0], batch, ids.shape[0] - 1, gen)
        loss = diffusion_loss(lambda x, t, e: M.unet3d_forward(unet, x, t, e), lat[pick], all_ctx[c], ac, gen, t_min, x0_weight)
        update(opt, params, loss, lr_at(step, steps, lr))
        log.add(step, loss.item(), every=25)
        if (step + 1) % 500 == 0:  # a checkpoint to evaluate while training goes on
            torch.save(M.motion_state(unet), work / "motion.pt")
    log.done(batch=batch, lr=lr)
    torch.save(M.motion_state(unet), work / "motion.pt")


# ----------------------------------------------------------------------------------------------


def fp16(state: dict) -> dict:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def stage_export(work: Path, out: Path):
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    vae = M.make_vae()
    vae.load_state_dict(torch.load(work / "vae.pt"))
    per = torch.load(work / "personal.pt")
    unet2d, te, unet3d = load_trained(work)
    M.check_round_trips(unet2d, vae, te, unet3d)

    te_state = {k: v for k, v in te.state_dict().items() if not k.endswith("position_ids")}
    base = {**M.unet_state_to_ldm(unet2d.state_dict()), **M.vae_state_to_ldm(vae.state_dict()), **M.te_state_to_ldm(te_state)}
    save_file(fp16(base), out / "base.safetensors", metadata={"format": "pt", "made_by": "tools/train/train.py"})
    save_file(fp16(M.unet_state_to_ldm(per["unet"])), out / "personalized.safetensors",
              metadata={"format": "pt", "made_by": "tools/train/train.py"})
    official = fp16(M.motion_state_to_official(M.motion_state(unet3d)))
    torch.save(official, out / "mm.ckpt")
    off = {k: (torch.zeros_like(v) if ".temporal_transformer.proj_out." in k else v) for k, v in official.items()}
    torch.save(off, work / "mm_off.ckpt")
    (out / "arch.json").write_text(json.dumps(M.ARCH, indent=2) + "\n")
    for f in sorted(out.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 1e6:.2f} MB")


def stage_import(work: Path, assets: Path):
    """The committed demo files (fp16) back into training checkpoints (fp32), to continue training
    from them: vae.pt, image.pt, motion.pt, personal.pt."""
    unet2d, vae, te = load_image_model(assets, personalized=False)
    torch.save(vae.state_dict(), work / "vae.pt")
    torch.save({"unet": unet2d.state_dict(), "te": te.state_dict()}, work / "image.pt")
    torch.save(load_motion_state(assets), work / "motion.pt")
    per, _, _ = load_image_model(assets, personalized=True)
    torch.save({"unet": per.state_dict(), "te": te.state_dict()}, work / "personal.pt")
    print(f"[import] {assets} -> {work}: vae.pt image.pt motion.pt personal.pt")


def track(frames: np.ndarray) -> tuple[str, float]:
    """The tracker of crates/cli/src/motion_check.rs (same thresholds), for monitoring training:
    (direction or still/lost, mean frame-to-frame centroid jump). frames (F, H, W, 3) uint8."""
    cents = []
    for f in frames.astype(np.int32):
        border = np.concatenate([f[0], f[-1], f[1:-1, 0], f[1:-1, -1]])
        bg = np.sort(border, axis=0)[len(border) // 2]
        ys, xs = np.nonzero(np.abs(f - bg).sum(-1) > 110)
        cents.append((xs.mean() + 0.5, ys.mean() + 0.5) if len(xs) else None)
    if any(c is None for c in cents):
        return "lost", float("inf")
    c = np.array(cents)
    dx, dy = c[-3:].mean(0) - c[:3].mean(0)
    jump = float(np.linalg.norm(np.diff(c, axis=0), axis=1).mean())
    if max(abs(dx), abs(dy)) < 8:
        return "still", jump
    return (("left" if dx < 0 else "right") if abs(dx) >= abs(dy) else ("up" if dy < 0 else "down")), jump


def stage_eval(work: Path, seeds: int, guidance: float, steps: int, personal: bool, motion: bool):
    """Direction success rate of the checkpoints in --work, sampled in PyTorch (DDIM, CFG) and
    tracked as in the Rust demo_motion test (prompts cycle colours and shapes the same way)."""
    from diffusers.models.attention_processor import AttnProcessor

    vae = M.make_vae()
    vae.load_state_dict(torch.load(work / "vae.pt"))
    _, te, unet = load_trained(work, "personal" if personal else "image", motion)
    for m in (unet, vae):
        m.set_attn_processor(AttnProcessor())
        m.eval()
    te.eval()
    colours, shapes = data.COLOURS, data.SHAPES
    ok, n, jumps, seen = 0, 0, [], {}
    for j, d in enumerate(data.DIRECTIONS):
        for i in range(seeds):
            prompt = f"a {colours[i % 4]} {shapes[(i // 4 + i) % 3]} moving {d}"
            lat = torch.from_numpy(np.random.default_rng([SEED, i, j]).standard_normal((1, 4, 16, 8, 8)).astype(np.float32))
            _, frames = sample(unet, vae, te, prompt, lat, steps, guidance)
            got, jump = track(frames)
            ok += got == d
            n += 1
            jumps.append(jump)
            seen[got] = seen.get(got, 0) + 1
    print(f"[eval] {'personal' if personal else 'base'}{'' if motion else ' without motion module'}, guidance {guidance}: "
          f"{ok}/{n} move as prompted; tracked {seen}; mean jump {np.mean(jumps):.2f} px", flush=True)
    return ok / n


@torch.no_grad()
def stage_probe(work: Path, clips: int = 24):
    """How much the trained model's noise prediction depends on the caption's direction, per
    noise level: epsilon-MSE on base clips with the true caption, with the opposite direction and
    with the empty caption (same noise). At t = 900 the layout of the video is still open; a
    model whose loss there does not care about the direction word cannot make the prompted motion."""
    lat, _, _ = load_latents(work, "base")
    captions = torch.load(work / "latents_base.pt")["captions"]
    _, te, unet = load_trained(work)
    unet.eval()
    te.eval()
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    pick = torch.arange(clips) * 7
    true = [captions[i] for i in pick]
    swapped = [c.rsplit(" ", 1)[0] + " " + opposite[c.rsplit(" ", 1)[1]] for c in true]
    gen = torch.Generator().manual_seed(SEED + 9)
    ac = linear_alphas_cumprod()
    for t in (900, 600, 300):
        noise = torch.randn(lat[pick].shape, generator=gen)
        zt = ac[t].sqrt() * lat[pick] + (1 - ac[t]).sqrt() * noise
        row = {}
        for name, caps in (("true caption", true), ("opposite direction", swapped), ("empty caption", [""] * clips)):
            ctx = te(tokenize(caps)).last_hidden_state
            eps = torch.cat([M.unet3d_forward(unet, zt[i : i + 4], torch.full((len(zt[i : i + 4]),), t), ctx[i : i + 4])
                             for i in range(0, clips, 4)])
            row[name] = F.mse_loss(eps, noise).item()
        print(f"[probe] t={t}: " + ", ".join(f"{k} {v:.5f}" for k, v in row.items())
              + f" (opposite / true = {row['opposite direction'] / row['true caption']:.2f})", flush=True)


def stage_plot(work: Path, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = json.loads((work / "losses.json").read_text())
    stages = [s for s in ("vae", "vae2", "image", "motion", "motion2", "personal") if s in losses]
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3.2))
    for ax, s in zip(np.atleast_1d(axes), stages):
        ax.plot(losses[s]["step"], losses[s]["loss"])
        ax.set_yscale("log")
        ax.set_title(f"{s} ({losses[s].get('seconds', 0) / 60:.1f} min)")
        ax.set_xlabel("step")
        ax.set_ylabel("reconstruction MSE" if s.startswith("vae") else "epsilon MSE")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["vae", "vae2", "encode", "image", "motion", "motion2", "personal", "export", "plot", "import", "eval", "probe"])
    p.add_argument("--work", type=Path, default=Path("target/micro-train"))
    p.add_argument("--out", type=Path, default=Path("crates/cli/assets/demo"))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--clips", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--t-min", type=int, default=0, help="motion: train on timesteps t_min..999 only")
    p.add_argument("--x0-weight", type=float, default=0.0, help="motion: weight each sample by min(1/SNR, this)")
    p.add_argument("--lr", type=float, default=None, help="personal: peak learning rate (3e-4)")
    p.add_argument("--style", default="personal", help="personal: the style fine-tuned on (data.py)")
    p.add_argument("--up-only", action="store_true", help="personal: fine-tune only the UNet's decoder half")
    p.add_argument("--seeds", type=int, default=5, help="eval: seeds per direction")
    p.add_argument("--guidance", type=float, default=7.5, help="eval: classifier-free guidance (the demo default)")
    p.add_argument("--personal", action="store_true", help="eval: the personalised UNet")
    p.add_argument("--no-motion", action="store_true", help="eval: without the motion module")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.stage == "vae":
        stage_vae(a.work, a.steps or 1200, a.batch or 32, False, 32, 1e-3)
    elif a.stage == "vae2":
        stage_vae(a.work, a.steps or 600, a.batch or 16, True, 64, 5e-4)
    elif a.stage == "encode":
        stage_encode(a.work, a.clips, "base")
        stage_encode(a.work, a.clips // 3, "personal")
    elif a.stage == "image":
        stage_image(a.work, a.steps or 3000, a.batch or 64, "base", "image", None, 1e-3)
    elif a.stage == "motion2":  # continue the motion module on the (further trained) image model
        stage_motion(a.work, a.steps or 300, a.batch or 4, 3e-4, resume=True, t_min=a.t_min, x0_weight=a.x0_weight)
    elif a.stage == "personal":
        only = ("up_blocks.", "conv_norm_out.", "conv_out.") if a.up_only else ()
        if not (a.work / f"latents_{a.style}.pt").exists():  # an ablation style: encoded when first asked for
            stage_encode(a.work, 1000, a.style)
        stage_image(a.work, a.steps or 800, a.batch or 64, a.style, "personal", "image", a.lr or 3e-4, only=only)
    elif a.stage == "motion":
        stage_motion(a.work, a.steps or 1500, a.batch or 4, 1e-3)
    elif a.stage == "export":
        stage_export(a.work, a.out)
    elif a.stage == "eval":
        stage_eval(a.work, a.seeds, a.guidance, a.steps or 10, a.personal, not a.no_motion)
    elif a.stage == "probe":
        stage_probe(a.work)
    elif a.stage == "import":
        stage_import(a.work, a.out)
    elif a.stage == "plot":
        stage_plot(a.work, a.out / "losses.png")


if __name__ == "__main__":
    main()
