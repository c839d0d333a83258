#!/usr/bin/env bash
# Retrains the embedded demo model from scratch (tools/train/README.md): every stage in order,
# logs in target/micro-train/*.log, then exports into crates/cli/assets/demo/ (OUT=... elsewhere).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py="${PYTHON:-tools/train/.venv/bin/python}"
work="${WORK:-target/micro-train}"
out="${OUT:-crates/cli/assets/demo}"
mkdir -p "$work"
run() { echo "== $*"; "$py" tools/train/train.py "$@" --work "$work" --out "$out" 2>&1 | grep --line-buffered -v Warning | tee "$work/$1.log"; }
run vae --steps 1200 --batch 32
run vae2 --steps 600 --batch 16
run encode --clips 3000
run image --steps 3000 --batch 64
run motion --steps 3000 --batch 8
run personal --steps 800 --batch 64
run export
run plot
run eval --seeds 5
run eval --seeds 5 --personal
run eval --seeds 5 --no-motion
run probe
