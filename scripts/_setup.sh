# Shared by scripts/quickstart.sh and scripts/test.sh (sourced, not run). Every step is idempotent:
# packages already installed are not installed again (no apt-get update either), the venv in .venv
# is reused, torch 2.13.0 is installed only if missing, and `pip install -e` runs again only when
# pyproject.toml or the extras changed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPTISEG_VENV:-$REPO/.venv}"
TORCH_VERSION=2.13.0
TORCH_CPU_HOST=download.pytorch.org
TORCH_CPU_INDEX="https://$TORCH_CPU_HOST/whl/cpu"

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else say "need root for: $*  (run as root, or install sudo)"; exit 1
    fi
}

# apt_packages PKG...: install the Debian/Ubuntu packages that are not installed yet.
apt_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$package")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages present: $*"
        return
    fi
    say "installing system packages: ${missing[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# python_env EXTRAS: .venv with torch 2.13.0 (installed first: the CPU build unless nvidia-smi is there, so pip
# never fetches a CUDA build a machine cannot use) and optiseg installed editable with EXTRAS ("" or "[dev]").
python_env() {
    local extras="$1"
    if ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
        say "creating the virtual environment $VENV"
        python3 -m venv "$VENV"
    else
        say "reusing the virtual environment $VENV"
    fi
    if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
        if command -v nvidia-smi >/dev/null; then
            say "installing torch==$TORCH_VERSION first (nvidia-smi found: PyPI's CUDA build)"
            "$VENV/bin/pip" install "torch==$TORCH_VERSION"
        elif "$VENV/bin/python" -c 'import socket, sys; socket.getaddrinfo(sys.argv[1], 443)' "$TORCH_CPU_HOST" 2>/dev/null; then
            # PyPI's x86_64 Linux wheel is the CUDA build (GBs of nvidia-* packages). PyTorch's CPU index offers
            # 2.13.0+cpu, which PEP 440 ranks above 2.13.0, so pip takes it.
            say "installing torch==$TORCH_VERSION first (no NVIDIA GPU: the CPU build from $TORCH_CPU_INDEX)"
            "$VENV/bin/pip" install "torch==$TORCH_VERSION" --extra-index-url "$TORCH_CPU_INDEX"
        else
            # No name for the CPU index (an offline mirror, a sandbox): pip would retry it five times per package
            # before falling back; pip's own settings (find-links, a local index) are asked alone.
            say "installing torch==$TORCH_VERSION first ($TORCH_CPU_HOST does not resolve: from pip's configured sources)"
            "$VENV/bin/pip" install "torch==$TORCH_VERSION"
        fi
    fi
    # The stamp holds pyproject.toml's hash and the extras installed; [dev] includes the main install.
    local stamp="$VENV/.optiseg-install" hash
    hash="$(sha256sum < "$REPO/pyproject.toml" | cut -d' ' -f1)"
    if [ "$(sed -n 1p "$stamp" 2>/dev/null)" = "$hash" ] && "$VENV/bin/python" -c 'import optiseg' 2>/dev/null \
        && { [ -z "$extras" ] || [ "$(sed -n 2p "$stamp")" = "$extras" ]; }; then
        say "optiseg$extras already installed in $VENV"
    else
        say "installing optiseg$extras (pip install -e '.$extras')"
        "$VENV/bin/pip" install -e "$REPO$extras"
        printf '%s\n%s\n' "$hash" "$extras" > "$stamp"
    fi
    # shellcheck disable=SC1091
    . "$VENV/bin/activate"
}
