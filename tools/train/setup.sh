#!/usr/bin/env bash
# Creates tools/train/.venv (or $VENV) and installs the pinned training stack (requirements.txt),
# with the same idempotent venv logic as the reference tool (tools/reference/setup.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$here/.venv}" REQUIREMENTS="$here/requirements.txt" LABEL=training exec "$here/../reference/setup.sh"
