#!/usr/bin/env bash
# The whole default test suite: project setup, then every test of the workspace.
# CI (.ci/run) runs exactly this.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
tools/setup.sh
cargo test --workspace --locked "$@"
