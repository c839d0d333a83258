#!/usr/bin/env bash
# The benchmark of BENCHMARKS.md (not part of the default tests): a full-size SD1.5-shaped model
# with random weights (v2 motion module, one LoRA) in the real formats, built with build-graph,
# then the three graphs timed side by side on the same inputs with tract, ONNX Runtime CPU and
# the PyTorch/diffusers peer, and `animate` run on the full-size artifact for its peak memory.
#
#     tools/bench/run.sh [--runs N] [--latents 8,16] [--skip-peer] [--skip-build] [--skip-animate]
#
# Needs ~21 GB of disk under target/ (inputs 8.2 GB + artifact 5.9 GB + a second artifact for the
# LoRA-only rebuild) and ~14 GB of memory; the peer needs tools/reference/setup.sh's venv.
# Everything lands in target/bench/ (results-*.jsonl, *.log, report.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUNS=5 LATENTS=8,16 PEER=1 BUILD=1 ANIMATE=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --latents) LATENTS=$2; shift 2 ;;
        --skip-peer) PEER=0; shift ;;
        --skip-build) BUILD=0; shift ;;
        --skip-animate) ANIMATE=0; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
tools/setup.sh
cargo build --release -p animatediff-fixtures -p animatediff-cli -p animatediff-bench
[[ $PEER == 0 ]] || tools/reference/setup.sh
B=target/bench F=target/full-size A=target/full-size-artifact
mkdir -p $B
T() { /usr/bin/time -f "wall %e s, peak RSS %M KB" "$@"; }
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/{print $2}') GiB; $(date -u +%FT%TZ)" | tee $B/machine.txt

[[ -f $F/mm_v2.ckpt ]] || T ./target/release/make-fixtures --full-size --out $F
if [[ $BUILD == 1 ]]; then
    build=(./target/release/build-graph --base $F/base.safetensors --personalized $F/personalized.safetensors
        --motion-module $F/mm_v2.ckpt --quiet)
    rm -rf $A $A-rescaled
    echo "== build-graph, full size, first build (--no-golden)" | tee $B/build.log
    T "${build[@]}" --lora $F/lora.safetensors:0.8 --out $A --no-golden 2>&1 | tee -a $B/build.log
    echo "== same inputs, LoRA scale 0.8 -> 0.6, into a new artifact" | tee -a $B/build.log
    T "${build[@]}" --lora $F/lora.safetensors:0.6 --out $A-rescaled --no-golden 2>&1 | tee -a $B/build.log
    echo "== rebuild in place with LoRA scale 0.6 (re-uses the UNet weights no LoRA touches)" | tee -a $B/build.log
    T "${build[@]}" --lora $F/lora.safetensors:0.6 --out $A --no-golden 2>&1 | tee -a $B/build.log
    echo "== the same rebuild with --no-reuse (writes every weight again)" | tee -a $B/build.log
    T "${build[@]}" --lora $F/lora.safetensors:0.6 --out $A --no-golden --no-reuse 2>&1 | tee -a $B/build.log
    echo "== back to 0.8 in place (the artifact the graphs below are timed on)" | tee -a $B/build.log
    T "${build[@]}" --lora $F/lora.safetensors:0.8 --out $A --no-golden 2>&1 | tee -a $B/build.log
    rm -rf $A-rescaled
    du -sb $A | tee -a $B/build.log
fi

IO=$B/io
rm -rf $IO && mkdir -p $IO
# ONNX Runtime first: it writes the shared inputs the others read
for ep in cpu tract; do
    echo "== graph-bench --ep $ep"
    T ./target/release/graph-bench --model $A --ep $ep --io $IO --latents $LATENTS --runs $RUNS > $B/results-$ep.jsonl 2> $B/graph-bench-$ep.log
    tail -1 $B/graph-bench-$ep.log
done
if [[ $PEER == 1 ]]; then
    echo "== PyTorch peer"
    T tools/reference/.venv/bin/python tools/bench/peer_pytorch.py --artifact $A --io $IO --latents ${LATENTS//,/ } --runs $RUNS \
        > $B/results-pytorch.jsonl 2> $B/peer.log
    tail -1 $B/peer.log
fi
if [[ $ANIMATE == 1 ]]; then
    echo "== animate, full size, tract and ONNX Runtime CPU: 16 frames, 64x64, 2 steps"
    for ep in tract cpu; do
        T ./target/release/animate --model $A --ep $ep --prompt "a corgi running on a beach" --frames 16 --width 64 --height 64 \
            --steps 2 --seed 1 --out $B/animate-$ep.gif 2>&1 | tail -1 | tee $B/animate-$ep.log
    done
    echo "weights: $(du -cb $A/*.onnx $A/*.data* | tail -1)"
fi
tools/reference/.venv/bin/python tools/bench/report.py --io $IO $B/results-*.jsonl | tee $B/report.md
