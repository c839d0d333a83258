"""Turns the JSON lines of graph-bench and peer_pytorch.py (one file per runtime) into the
Markdown tables of BENCHMARKS.md: median times, ratio to PyTorch, achieved GFLOP/s against the
GEMM ceiling measured in the same run, and each runtime's output against PyTorch's.

    python3 tools/bench/report.py --io DIR RESULTS.jsonl...
Needs only numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--io", type=Path, required=True)
    p.add_argument("results", type=Path, nargs="+")
    args = p.parse_args()

    rows = []
    for f in args.results:
        for line in f.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    gemms = [r for r in rows if r.get("graph") == "sgemm"]
    # the ceiling: the fastest fp32 GEMM any runtime reached on this machine in this run
    gemm = max(gemms, key=lambda r: r["gflops"], default=None)
    flops = {r["latent"]: r["flops"] for r in rows if r.get("runtime") == "pytorch" and r.get("graph") == "unet" and r.get("flops")}
    timed = [r for r in rows if "median_s" in r and r.get("graph") != "sgemm"]
    runtimes = []
    for r in timed:
        if r["runtime"] not in runtimes:
            runtimes.append(r["runtime"])
    peer = {(r["graph"], r.get("latent")): r for r in timed if r["runtime"] == "pytorch"}

    for r in gemms:
        print(f"- fp32 GEMM {r['n']}x{r['n']}x{r['n']}, {r['runtime']}, {r['threads']} threads: {r['gflops']:.0f} GFLOP/s "
              f"(median of {len(r['runs_s'])}: {r['median_s']:.3f} s)")
    if gemm:
        print(f"\nGEMM ceiling used below: {gemm['gflops']:.0f} GFLOP/s ({gemm['runtime']})\n")
    print("| graph | size | runtime | median | runs | ratio to PyTorch | GFLOP/s (% of GEMM) | load | peak RSS | vs PyTorch output (max abs / rel) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    order = {"text_encoder": 0, "unet": 1, "vae_decoder": 2}
    for r in sorted(timed, key=lambda r: (order.get(r["graph"], 9), r.get("latent") or 0, runtimes.index(r["runtime"]))):
        g, h = r["graph"], r.get("latent")
        size = "77 tokens, B=2" if g == "text_encoder" else (f"B=2, F={r.get('frames')}, {h}x{h} latents ({8 * h} px)" if g == "unet" else f"1 frame, {8 * h}x{8 * h} px")
        ref = peer.get((g, h))
        ratio = f"{r['median_s'] / ref['median_s']:.2f}x" if ref else "—"
        gf = "—"
        if g == "unet" and h in flops:
            v = flops[h] / r["median_s"] / 1e9
            gf = f"{v:.0f}" + (f" ({100 * v / gemm['gflops']:.0f} %)" if gemm else "")
        diff = "—"
        if ref and r["runtime"] != "pytorch":
            a = np.load(args.io / f"{r['output']}.npy").astype(np.float64)
            b = np.load(args.io / f"{ref['output']}.npy").astype(np.float64)
            if a.shape == b.shape:
                d = np.abs(a - b).max()
                diff = f"{d:.2e} / {d / np.abs(b).max():.2e}"
            else:
                diff = f"shapes {a.shape} vs {b.shape}"
        runs = ", ".join(f"{t:.3f}" for t in r["runs_s"])
        load = f"{r['load_s']:.1f} s" if r.get("load_s") is not None else "—"
        print(f"| {g} | {size} | {r['runtime']} | **{r['median_s']:.3f} s** | {runs} | {ratio} | {gf} | {load} | "
              f"{r['peak_rss_mib'] / 1024:.1f} GB | {diff} |")
    if flops:
        print("\nUNet FLOPs (torch.utils.flop_counter, attention as matmuls): "
              + ", ".join(f"{h}x{h}: {f / 1e12:.3f} TFLOP" for h, f in sorted(flops.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
