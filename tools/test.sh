#!/usr/bin/env bash
# The whole default test suite: project setup, then every test of the workspace.
# CI (.ci/run) runs exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tools/setup.sh
# A one-off build gains nothing from incremental caches, which double the size
# of target/ on a small CI disk. Set CARGO_INCREMENTAL=1 to keep them.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo test --workspace --locked "$@"
