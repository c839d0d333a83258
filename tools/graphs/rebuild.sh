#!/usr/bin/env bash
# Rebuilds the committed artifact graphs/micro_v2 from the micro fixture set (SD1.5 topology,
# heads and groups; all widths 32, CLIP width 24; v2 motion module). The paths given to
# build-graph are recorded in the manifest: keep them relative to the repository root, as here
# (tests/committed_graphs.rs rebuilds with the same paths and compares byte for byte).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release -p animatediff-fixtures -p animatediff-cli
./target/release/make-fixtures --micro --out target/graphs-fixtures >/dev/null
./target/release/build-graph --base target/graphs-fixtures/base.safetensors \
    --motion-module target/graphs-fixtures/mm_v2.ckpt --motion-windows --out graphs/micro_v2 --quiet
ls -l graphs/micro_v2
