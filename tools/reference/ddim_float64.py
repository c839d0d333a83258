#!/usr/bin/env python3
"""The 4-step DDIM run of one golden (`make_goldens.py`'s `ddim_*` arrays) again, in float64: the
same fixture models, inputs, scheduler and guidance, with every model cast to double. Its final
latents are the yardstick for how far a float32 runtime drifts over a sampling loop (the float32
golden carries PyTorch's own float32 rounding, which is of the same size as the drift measured).

    tools/reference/.venv/bin/python tools/reference/ddim_float64.py \
        --fixtures target/fixtures --name personalized_v2 --out tests/goldens/ddim_float64_personalized_v2.npz

Writes `ddim_final_latents` (float64, [1,4,16,8,8]) and `meta`; prints how far the float32 golden
lies from it. Tools only, never in CI: the file is committed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens as mg  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=Path("target/fixtures"))
    parser.add_argument("--goldens", type=Path, default=Path("tests/goldens"))
    parser.add_argument("--name", default="personalized_v2", help="base_v2, personalized_v1, ... (no LoRA variants)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=mg.SEED)
    args = parser.parse_args()
    variant, version = args.name.rsplit("_", 1)
    if variant not in ("base", "personalized"):
        raise SystemExit(f"--name {args.name}: only base_* and personalized_* (the LoRA variants merge in float32)")

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)

    fx = mg.Fixtures(args.fixtures)
    fx.check_manifest()
    scheduler = mg.make_scheduler()
    inputs = mg.make_inputs(args.seed, fx.arch)
    mm = mg.load_motion_module(fx, version)
    if variant == "base":
        image = mg.load_image_model(fx, "base.safetensors", torch.float32)
    else:
        image = mg.load_image_model(fx, "personalized.safetensors", torch.float16)
    unet = mg.build_unet(fx, image, mm).double()
    text_encoder = image.text_encoder.double()

    golden = np.load(args.goldens / f"{args.name}.npz")
    assert np.array_equal(golden["ddim_init_latents"], inputs.ddim_latents), "golden inputs differ from make_inputs(seed)"
    ids = torch.from_numpy(inputs.te_ids)
    context = torch.cat([mg.encode_text(text_encoder, ids[0:1]), mg.encode_text(text_encoder, ids[1:2])])
    assert context.dtype == torch.float64
    latents = torch.from_numpy(inputs.ddim_latents).double()
    final = mg.ddim_sample(unet, scheduler, context, latents, mg.GUIDANCE)
    assert final.dtype == torch.float64, final.dtype
    final = final.numpy()

    f32 = golden["ddim_final_latents"].astype(np.float64)
    d = np.abs(f32 - final)
    print(f"{args.name}: float32 golden vs float64: max abs {d.max():.3e}, max |ref| {np.abs(final).max():.4f}, "
          f"rel {d.max() / np.abs(final).max():.3e}")
    meta = {"name": args.name, "tool": "tools/reference/ddim_float64.py", "seed": args.seed,
            "packages": {"torch": torch.__version__, "numpy": np.__version__},
            "fixture_sha256": {f: fx.sha256(f) for f in ["arch.json", *image.files, *mm.files]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, ddim_final_latents=np.ascontiguousarray(final),
             meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
