#!/usr/bin/env bash
# Full-size check (not in the default test run): SD1.5-shaped random weights in the real formats
# (4.3 GB fp32 base, 2.1 GB fp16 personalised, rank-4 kohya LoRA, 1.8 GB v2 .ckpt), built with
# build-graph (time, peak RSS), then one UNet forward (B=2, F=16, 8x8 latents) with ONNX Runtime
# CPU and with tract, outputs compared. Needs ~21 GB of disk under target/ and ~14 GB of memory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
tools/setup.sh
cargo build --release -p animatediff-fixtures -p animatediff-cli -p animatediff-bench
F=target/full-size
A=target/full-size-artifact
[[ -f $F/mm_v2.ckpt ]] || ./target/release/make-fixtures --full-size --out $F
/usr/bin/time -v ./target/release/build-graph --base $F/base.safetensors --personalized $F/personalized.safetensors \
    --lora $F/lora.safetensors:0.8 --motion-module $F/mm_v2.ckpt --out $A --quiet 2> target/full-size-build.log
grep -E "Elapsed|Maximum resident" target/full-size-build.log
ls -l $A
for rt in ort tract; do
    /usr/bin/time -v ./target/release/unet-forward --model $A --runtime $rt --runs 3 --save target/full-size-$rt.bin 2> target/full-size-$rt.log
    grep -E "Maximum resident|Elapsed" target/full-size-$rt.log
done
python3 - <<'PY'
import struct
a = open("target/full-size-ort.bin", "rb").read(); b = open("target/full-size-tract.bin", "rb").read()
n = len(a) // 4; x = struct.unpack(f"{n}f", a); y = struct.unpack(f"{n}f", b)
d = max(abs(p - q) for p, q in zip(x, y)); m = max(abs(p) for p in x)
print(f"tract vs ORT CPU: max abs diff {d:.3e}, max |value| {m:.3f}, relative {d / m:.3e}")
PY
