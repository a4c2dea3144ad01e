#!/usr/bin/env bash
# Set-up for the tests, then the README's test command (CI's .ci/run is just this script).
# System packages for the real services the tests start: sshd (SSH runner), PostgreSQL (many
# workers), Chromium (report), and an emulated Raspberry Pi (debootstrap + qemu-user-static through
# binfmt_misc; its rootfs is cached in ${OPTISEG_PI_ROOTFS:-/var/cache/optiseg-pi-rootfs}).
# Then .venv with torch 2.13.0 first and optiseg[dev], and `python -m pytest "$@"`.
# Idempotent: present packages are not reinstalled, the venv is reused.
. "$(dirname "$0")/_setup.sh"
cd "$REPO"

apt_packages python3 python3-venv openssh-server postgresql chromium \
    debootstrap qemu-user-static binfmt-support debian-archive-keyring

# arm64 programs run through qemu: binfmt_misc mounted and the qemu-aarch64 entry enabled
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/status" ] || as_root mount -t binfmt_misc binfmt_misc "$BINFMT"
grep -qs '^enabled' "$BINFMT/qemu-aarch64" || as_root update-binfmts --enable qemu-aarch64

python_env "[dev]"

say "python -m pytest $*"
exec python -m pytest "$@"
