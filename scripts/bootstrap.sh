#!/usr/bin/env bash
# Bootstraps everything the demo or the tests need on a fresh Debian machine:
# Debian's ffmpeg libraries (torchcodec links them), nginx for the tests, a .venv with the
# pinned dependencies and the package installed in editable mode. Safe to run repeatedly.
#   scripts/bootstrap.sh demo|test
set -euo pipefail
cd "$(dirname "$0")/.."
want="${1:-demo}"

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }
}

apt_install ffmpeg
[ "$want" = "test" ] && apt_install nginx-light

PY="${PYTHON:-python3}"
stamp=".venv/.bootstrap-$(cat pyproject.toml requirements/constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  started=$SECONDS
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  echo "bootstrap: installing Python dependencies into .venv (about a minute when the wheels are cached)"
  echo "bootstrap: [1/3] pip"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # torch first, pinned: the CPU wheel of this version is on the machine's disk.
  echo "bootstrap: [2/3] torch"
  .venv/bin/python -m pip install -q -c requirements/constraints.txt torch
  echo "bootstrap: [3/3] lerobot-stream-loader and its dependencies"
  .venv/bin/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
  rm -f .venv/.bootstrap-*
  touch "$stamp"
  echo "bootstrap: done in $((SECONDS - started)) s"
fi
