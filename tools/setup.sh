#!/usr/bin/env bash
# Project setup, idempotent: everything the tests and tools need beyond cargo.
#
# - ONNX Runtime's shared library for `ort` (load-dynamic), taken from the `onnxruntime` PyPI
#   wheel (no other download source works here) into .ort/; the runner finds it through
#   ORT_DYLIB_PATH or .ort/. Set ANIMATEDIFF_SKIP_ORT=1 to skip it.
#
# Python is only used to fetch and unpack the wheel; nothing in the product path needs it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ort_version="1.32.0"
ort_dir="$root/.ort"

if [[ "${ANIMATEDIFF_SKIP_ORT:-0}" != "1" ]]; then
    if [[ -f "$ort_dir/VERSION" && "$(cat "$ort_dir/VERSION")" == "$ort_version" ]] && ls "$ort_dir"/libonnxruntime.so* >/dev/null 2>&1; then
        echo "setup: ONNX Runtime $ort_version already in $ort_dir"
    else
        python="$(command -v python3 || command -v python)" || { echo "setup: python3 is needed to fetch the onnxruntime wheel" >&2; exit 1; }
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        echo "setup: fetching onnxruntime==$ort_version from PyPI"
        "$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$ort_version"
        mkdir -p "$ort_dir.partial"
        "$python" - "$tmp" "$ort_dir.partial" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if "/capi/libonnxruntime" in n and ".so" in n]
    if not names:
        sys.exit(f"no libonnxruntime in {wheel}")
    for n in names:
        with z.open(n) as src, open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as dst:
            dst.write(src.read())
PY
        echo "$ort_version" > "$ort_dir.partial/VERSION"
        rm -rf "$ort_dir"
        mv "$ort_dir.partial" "$ort_dir"
        echo "setup: ONNX Runtime $ort_version installed in $ort_dir"
    fi
fi
