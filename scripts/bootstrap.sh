#!/usr/bin/env bash
# Prepares a fresh Debian / Raspberry Pi OS machine for pipos: Debian packages (when missing
# and running as root), the virtual environment, and the project with the extras asked for,
# every Python package at the version and hash uv.lock records. Idempotent: a second run only
# checks.
#
#   scripts/bootstrap.sh [EXTRAS]          set up (EXTRAS "" = the terminal only, "sim" = the
#                                          terminal and its simulator (make run), "dev" = all
#                                          (make test), "pcsc,nfc,serial,printer" = a
#                                          terminal's devices, no simulator)
#   scripts/bootstrap.sh lock [PACKAGE]    re-resolve uv.lock on purpose: every package to the
#                                          newest release pyproject.toml allows, or only PACKAGE
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV:-.venv}"
python="${PYTHON:-python3}"

# Debian packages the terminal needs. python3-venv gives `python3 -m venv` on Debian; pcscd
# and libccid run USB PC/SC readers; libpcsclite-dev, swig and gcc build pyscard (it has no
# Linux wheel); chromium shows the kiosk checkout page; fonts-wqy-zenhei has the CJK glyphs
# of its Chinese labels.
debian_packages=(python3-venv python3-dev gcc pcscd libccid libpcsclite-dev swig
                 chromium fonts-wqy-zenhei)
# Only for development and CI: vsmartcard-vpcd is the virtual reader the tests put simulated
# cards in. Never on a terminal: it adds a reader that anyone on the network can put a card in.
# swtpm (with swtpm-tools) is the software TPM 2.0 the tests seal device secrets to.
dev_debian_packages=(vsmartcard-vpcd swtpm swtpm-tools)
# With the tpm extra (and dev, which carries it): tpm2-pytss has no wheel, so it is built from
# its sdist against the TSS headers (libtss2-dev, found through pkg-config); libtss2-dev also
# pulls in the TSS libraries and TCTIs it loads at run time (device: /dev/tpmrm0, swtpm).
tpm_debian_packages=(libtss2-dev pkg-config)

install_debian_packages() {
    local wanted=("${debian_packages[@]}")
    [[ ",$1," == *,dev,* ]] && wanted+=("${dev_debian_packages[@]}")
    [[ ",$1," == *,dev,* || ",$1," == *,tpm,* ]] && wanted+=("${tpm_debian_packages[@]}")
    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || echo "bootstrap: apt-get update failed; trying the cached lists"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        # A python built outside Debian (pyenv, a CI image) already carries venv and headers.
        echo "bootstrap: note: Debian packages not installed (not root or no apt): ${missing[*]}"
    fi
}

make_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        echo "bootstrap: creating virtual environment $venv"
        "$python" -m venv "$venv"
    fi
}

# uv reads the lock, so uv itself is installed from the lock's own record of it (version and
# hashes) by the venv's pip; pip is in the lock too, and uv then puts it at the locked version.
install_uv() {
    local wanted
    wanted="$("$venv/bin/python" scripts/locked_requirement.py uv uv.lock)"
    local version="${wanted%% *}"
    if [ "$("$venv/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" = "${version#uv==}" ]; then
        return 0
    fi
    echo "bootstrap: installing $version (from uv.lock, hash-checked) into $venv"
    requirement_file="$(mktemp)"
    trap 'rm -f "$requirement_file"' EXIT
    echo "$wanted" >"$requirement_file"
    # Wheels only: uv is never built from source here (that needs a Rust toolchain).
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        --only-binary=:all: --require-hashes -r "$requirement_file"
}

uv() {
    UV_PROJECT_ENVIRONMENT="$venv" UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
        "$venv/bin/uv" "$@"
}

if [ "${1-}" = lock ]; then
    make_venv
    install_uv
    if [ -n "${2-}" ]; then
        uv lock --upgrade-package "$2"
    else
        uv lock --upgrade
    fi
    echo "bootstrap: uv.lock re-resolved; review \`git diff uv.lock\`, then run make test"
    exit 0
fi

extras="${1-dev}"
install_debian_packages "$extras"
make_venv
install_uv
# --locked: a pyproject.toml that no longer matches uv.lock is an error, never a silent
# re-resolve. The test set-up and a terminal's install get exactly the lock's set for their
# extras (anything else is removed: a terminal upgraded from an install that carried the
# simulator loses it); the run set-up ("" or "sim") only adds what the demo needs, so it keeps
# a developer's dev tools.
sync=(sync --locked --quiet)
if [ -n "$extras" ]; then
    IFS=, read -r -a extra_list <<<"$extras"
    for extra in "${extra_list[@]}"; do
        sync+=(--extra "$extra")
    done
fi
if [ -z "$extras" ] || [ "$extras" = sim ]; then
    sync+=(--inexact)
fi
uv "${sync[@]}"
