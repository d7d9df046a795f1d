#!/usr/bin/env bash
# Installs the build and test dependencies from Debian's packages, then the Python packages the server tests drive
# `moe serve` with (the official `openai` client, scripts/requirements-test.txt) into a virtual environment in
# .deps/test-venv. Idempotent: does nothing when everything is present. Needs root (or sudo) only when a Debian
# package is missing, and PyPI only when the environment is.
set -euo pipefail

packages=(cmake g++ make pkg-config liburing-dev libfmt-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
          libgtest-dev libgmock-dev libbenchmark-dev clang-format-14 python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

venv=.deps/test-venv
if ! "$venv/bin/python" -c "import openai" >/dev/null 2>&1; then
    echo "setup: creating $venv with scripts/requirements-test.txt"
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
fi
