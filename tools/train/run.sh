#!/usr/bin/env bash
# Retrains the embedded demo model from scratch (tools/train/README.md): every stage in order,
# niced, logs in target/micro-train/*.log, then exports into crates/cli/assets/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py="${PYTHON:-tools/train/.venv/bin/python}"
work="${WORK:-target/micro-train}"
mkdir -p "$work"
run() { echo "== $*"; nice -n 19 "$py" tools/train/train.py "$@" --work "$work" 2>&1 | grep --line-buffered -v Warning | tee "$work/$1.log"; }
run vae --steps 1200 --batch 32
run encode --clips 800
run image --steps 2500 --batch 64
run motion --steps 1000 --batch 4
run personal --steps 300 --batch 64
run export
run plot
