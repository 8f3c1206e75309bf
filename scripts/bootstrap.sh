#!/usr/bin/env bash
# Prepares a fresh Debian / Raspberry Pi OS machine for pipos: Debian packages (when missing
# and running as root), the virtual environment, and the project with the extras asked for.
# Idempotent: a second run only checks. Usage: scripts/bootstrap.sh [EXTRAS]
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1-dev}"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"

# Debian packages the project needs. python3-venv gives `python3 -m venv` on Debian; pcscd
# and libccid run USB PC/SC readers; vsmartcard-vpcd is the virtual reader the tests put a
# simulated card in; libpcsclite-dev, swig and gcc build pyscard; chromium shows the kiosk
# checkout page (and runs the page tests headless).
debian_packages=(python3-venv python3-dev gcc pcscd libccid vsmartcard-vpcd libpcsclite-dev swig
                 chromium fonts-wqy-zenhei)  # CJK glyphs: the page shows Chinese labels (zh)

missing=()
for pkg in "${debian_packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || echo "bootstrap: apt-get update failed; trying the cached lists"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        # A python built outside Debian (pyenv, a CI image) already carries venv and headers.
        echo "bootstrap: note: Debian packages not installed (not root or no apt): ${missing[*]}"
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating virtual environment $venv"
    "$python" -m venv "$venv"
fi
target="."
[ -n "$extras" ] && target=".[$extras]"
stamp="$venv/.pipos-installed-${extras:-core}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "bootstrap: installing pipos ${extras:+[$extras] }into $venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$target"
    touch "$stamp"
fi
