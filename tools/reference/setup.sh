#!/usr/bin/env bash
# Creates tools/reference/.venv and installs the pinned reference stack (requirements.txt).
# Idempotent: an existing venv whose installed versions already satisfy requirements.txt is left
# as it is. Needs python3.11 (or PYTHON=...) and access to PyPI; no model is ever downloaded.
# Other Python tools reuse it for their own stack: VENV, REQUIREMENTS and LABEL override the
# venv, the requirements file and the name printed (tools/train/setup.sh does).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${VENV:-$here/.venv}"
requirements="${REQUIREMENTS:-$here/requirements.txt}"
label="${LABEL:-reference}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python="python3"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv with $python"
    "$python" -m venv "$venv"
fi

# Every "name==version" line of requirements.txt must be installed at exactly that version.
satisfied() {
    "$venv/bin/python" - "$requirements" <<'EOF'
import sys
from importlib import metadata

ok = True
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, wanted = line.partition("==")
    try:
        have = metadata.version(name.strip())
    except metadata.PackageNotFoundError:
        have = None
    # torch wheels carry a local suffix (2.15.0+cu132): compare the public part.
    if have is None or have.split("+", 1)[0] != wanted.strip():
        print(f"  {name.strip()}: want {wanted.strip()}, have {have}")
        ok = False
sys.exit(0 if ok else 1)
EOF
}

if satisfied; then
    echo "$label venv up to date: $venv"
    exit 0
fi

echo "installing $requirements into $venv"
"$venv/bin/python" -m pip install --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -r "$requirements"
satisfied
echo "$label venv ready: $venv"
