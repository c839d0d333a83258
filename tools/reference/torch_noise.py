"""Goldens of PyTorch's CPU generator for the Rust port (crates/runtime/src/noise/torch.rs).

Each case seeds `torch.Generator("cpu").manual_seed(seed)` and makes successive
`torch.randn(n, generator=g, dtype=torch.float32)` calls on it, as diffusers does for the initial
latents and then for an ancestral sampler's per-step noise. Every call's output is recorded as its
SHA-256 (of the little-endian float32 bytes), and in full (as float32 bit patterns) when short.

    tools/reference/.venv/bin/python tools/reference/torch_noise.py --out tests/goldens/torch_noise.json

PyTorch evaluates randn of 16 values or more with its AVX2 kernel on every x86-64 CPU with AVX2
(and AVX-512); `ATEN_CPU_CAPABILITY=default` shows the other path (about a third of the values
differ in the last bits). The capability used is recorded.
"""
import argparse
import hashlib
import json

import numpy as np
import torch

CASES = [
    # (seed, [n per call]): latents of (1,4,16,8,8), then two more draws as an ancestral sampler
    (0, [4096]),
    (42, [4096, 4096, 4096]),
    (2**63 + 12345, [4096]),
    (18446744073709551615, [1, 16]),
    # sizes around PyTorch's 16-value threshold and its tail rule, (1,4,3,5,7) = 420
    (0, [1]),
    (0, [7]),
    (0, [15]),
    (42, [16]),
    (42, [17]),
    (42, [31]),
    (42, [33]),
    (42, [420]),
    (1234, [257, 100]),
    # the generator's cached normal: small draws share pairs, large ones do not touch it
    (7, [7, 3, 33, 5, 1]),
    # 512x512, 16 frames: (1,4,16,64,64); and 24 frames at 256x384: (1,4,24,32,48)
    (123, [262144]),
    (99, [147456, 147456]),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cases = []
    for seed, sizes in CASES:
        g = torch.Generator("cpu").manual_seed(seed)
        calls = []
        for n in sizes:
            x = torch.randn(n, generator=g, dtype=torch.float32).numpy()
            b = x.astype("<f4").tobytes()
            call = {"n": n, "sha256": hashlib.sha256(b).hexdigest(), "head_bits": [int(v) for v in x[:8].view(np.uint32)]}
            if n <= 512:
                call["bits"] = [int(v) for v in x.view(np.uint32)]
            calls.append(call)
        cases.append({"seed": str(seed), "calls": calls})
    meta = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "made_by": "tools/reference/torch_noise.py",
    }
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}: {len(cases)} cases, {meta}")


if __name__ == "__main__":
    main()
