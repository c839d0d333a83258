"""The PyTorch/diffusers peer for tools/bench/run.sh: the same files build-graph read, loaded the
way a diffusers user would (UNetMotionModel with the official AnimateDiff semantics of our
reference tool, tools/reference/make_goldens.py, plus diffusers' default SDPA attention), timed on
the same inputs as `graph-bench` (read from --io), its outputs written there for report.py.

Prints one JSON object per line, in graph-bench's schema, plus the machine's fp32 GEMM ceiling
and the UNet's FLOPs (torch.utils.flop_counter).

Run with the reference virtual environment (tools/reference/setup.sh):
    tools/reference/.venv/bin/python tools/bench/peer_pytorch.py --artifact DIR --io DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import make_goldens as ref  # noqa: E402  (the reference's loaders and official adjustments)
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Inputs(ref.Fixtures):
    """The user's files as the artifact's manifest names them (no fixtures.json needed)."""

    def __init__(self, manifest: dict):
        self.root = Path(".")
        self.findings = []
        self._sha = {}
        self.arch = manifest["architecture"]
        self.manifest = manifest

    def path(self, name: str) -> Path:
        p = Path(name)
        if not p.exists():
            raise ref.FixtureError(f"missing input file {p}")
        return p

    def note(self, text: str) -> None:
        print(f"  note: {text}", file=sys.stderr)


def load_motion_module(fx: Inputs, path: str) -> ref.MotionModuleFile:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = dict(raw["state_dict"] if isinstance(raw, dict) and "state_dict" in raw else raw)
    state.pop("animatediff_config", None)
    state = {k: v for k, v in state.items() if "motion_modules." in k}
    lengths = {v.shape[1] for k, v in state.items() if k.endswith("pos_encoder.pe")}
    assert len(lengths) == 1, lengths
    has_mid = any(k.startswith("mid_block.") for k in state)
    version = fx.manifest["motion_version"]
    return ref.MotionModuleFile(version, state, lengths.pop(), has_mid, [path])


def emit(**kv) -> None:
    kv.setdefault("runtime", "pytorch")
    kv["peak_rss_mib"] = peak_rss_mib()
    kv["threads"] = torch.get_num_threads()
    print(json.dumps(kv), flush=True)


def timed(fn, runs: int) -> tuple[list[float], torch.Tensor]:
    out = fn()  # warm-up, untimed (as graph-bench)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def gemm_ceiling(n: int, runs: int) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    times, _ = timed(lambda: a @ b, runs)
    med = statistics.median(times)
    emit(runtime="pytorch gemm", graph="sgemm", n=n, runs_s=times, median_s=med, gflops=2 * n**3 / med / 1e9)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", type=Path, required=True, help="the build-graph output whose inputs to load")
    p.add_argument("--io", type=Path, required=True, help="graph-bench's folder of shared inputs")
    p.add_argument("--latents", type=int, nargs="+", default=[8, 16])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--graphs", nargs="+", default=["gemm", "text_encoder", "unet", "vae_decoder"])
    p.add_argument("--no-flops", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(json.dumps({"runtime": "pytorch", "packages": {"torch": torch.__version__, "diffusers": ref.diffusers.__version__},
                      "threads": torch.get_num_threads()}), flush=True)
    if "gemm" in args.graphs:
        gemm_ceiling(4096, args.runs)

    manifest = json.loads((args.artifact / "manifest.json").read_text())
    fx = Inputs(manifest)
    inputs = manifest["inputs"]
    t0 = time.perf_counter()
    comps = inputs["components"]
    files = {c: comps[c][0]["path"] for c in ("unet", "vae", "text_encoder")}
    if len(set(files.values())) != 1 or any(len(comps[c]) != 1 for c in comps):
        # personalised files that supply only some components: load each and take its part
        print(f"  components from {files}", file=sys.stderr)
    images = {}
    for f in sorted(set(files.values())):
        # fp16 files are upcast to fp32 by load_strict, as build-graph does
        images[f] = ref.load_image_model(fx, f, torch.float16 if "fp16" in f or "personal" in f else torch.float32)
    image = ref.ImageModel("inputs", images[files["unet"]].unet_state, images[files["text_encoder"]].te_state,
                           images[files["vae"]].vae, images[files["text_encoder"]].text_encoder, list(files.values()))
    mm = load_motion_module(fx, inputs["motion_module"]["path"])
    unet = ref.build_unet(fx, image, mm)
    for lora in inputs["loras"]:
        report = ref.merge_kohya_lora(unet, image.text_encoder, load_file(lora["path"]), float(lora["multiplier"]), inputs["lora_scaling"])
        print(f"  LoRA {lora['path']} x{lora['multiplier']} ({inputs['lora_scaling']}): {report.unet_modules} UNet + "
              f"{report.te_modules} text-encoder modules", file=sys.stderr)
    emit(graph="load", load_s=time.perf_counter() - t0)

    if "text_encoder" in args.graphs:
        ids = torch.from_numpy(np.load(args.io / "text_ids.npy"))
        times, out = timed(lambda: ref.encode_text(image.text_encoder, ids), args.runs)
        np.save(args.io / "pytorch_text_encoder.npy", out.numpy())
        emit(graph="text_encoder", latent=None, runs_s=times, median_s=statistics.median(times), output="pytorch_text_encoder")

    if "unet" in args.graphs:
        context = torch.from_numpy(np.load(args.io / "unet_context.npy"))
        timestep = torch.tensor([981.0, 981.0])
        for h in args.latents:
            sample = torch.from_numpy(np.load(args.io / f"unet_sample_{h}.npy"))
            assert sample.shape[2] == args.frames, sample.shape
            flops = None
            # counted with plain attention, whose score matrices are 17 GB at 64x64 latents: only
            # at the small sizes
            if not args.no_flops and h <= 16:
                from torch.utils.flop_counter import FlopCounterMode

                unet.set_attn_processor(AttnProcessor())  # counted as plain matmuls
                counter = FlopCounterMode(display=False)
                with counter:
                    ref.unet_forward(unet, sample, timestep, context)
                flops = counter.get_total_flops()
            unet.set_attn_processor(AttnProcessor2_0())  # diffusers' default: fused SDPA
            times, out = timed(lambda: ref.unet_forward(unet, sample, timestep, context), args.runs)
            np.save(args.io / f"pytorch_unet_{h}.npy", out.numpy())
            emit(graph="unet", latent=h, frames=args.frames, runs_s=times, median_s=statistics.median(times), flops=flops,
                 output=f"pytorch_unet_{h}")

    if "vae_decoder" in args.graphs:
        vae = image.vae
        vae.set_attn_processor(AttnProcessor2_0())
        for h in args.latents:
            z = torch.from_numpy(np.load(args.io / f"vae_latent_{h}.npy"))
            times, out = timed(lambda: ref.decode_frames(vae, z), args.runs)
            np.save(args.io / f"pytorch_vae_decoder_{h}.npy", out.numpy())
            emit(graph="vae_decoder", latent=h, runs_s=times, median_s=statistics.median(times), output=f"pytorch_vae_decoder_{h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
