"""An emulated Raspberry Pi 4's software on 127.0.0.1: Debian bookworm arm64 under qemu-user, with its own sshd.

What a Pi owner's device runs (README, "Preparing a Raspberry Pi"), built from Debian's own
packages: an arm64 bookworm userland made by ``debootstrap``, Debian's ``python3``,
``python3-numpy`` and ``openssh-server``, a user ``pi`` and a venv ``~/optiseg-venv`` holding
onnxruntime's aarch64 wheel from PyPI (``--system-site-packages``, so numpy is Debian's). Its
programs run through ``qemu-user-static`` and binfmt_misc, so latency figures mean nothing;
the path (SSH, SFTP, the device-side scripts on Debian's arm64 Python) is real.

The rootfs is built once and cached in ``$OPTISEG_PI_ROOTFS`` (default
``/var/cache/optiseg-pi-rootfs``) as ``rootfs/``: it is built in a temporary sibling folder and
renamed into place only when complete, under a lock, so a second run reuses it and a killed build
leaves no half-made rootfs (its temporary folder is removed by the next build). A recipe stamp
(``etc/optiseg-pi-recipe.json``) makes a changed recipe rebuild.

``start_pi(folder)`` starts the device's own ``/usr/sbin/sshd`` (its own ``/etc/ssh/sshd_config``
and host keys, ``UsePAM=no``) on a free port of 127.0.0.1, chrooted into an overlay of the cached
rootfs (the cache is never written at run time) with ``/proc`` and ``/dev`` mounted and the
host's ``/sys`` deliberately absent (onnxruntime's CPU detection crashes under emulation on an
x86 ``/sys``). Every mount is made inside a private mount and PID namespace whose first process
is that sshd: when sshd ends (``PiDevice.stop()``, or the test process dying, through the parent
death signal) the kernel ends everything in it and drops every mount; nothing is mounted on this
machine's own tree. The client key is put in ``/home/pi/.ssh/authorized_keys`` as ``ssh-copy-id``
would. Host keys are not trusted here: the test records them with ``optiseg device trust``.

Needs root, ``debootstrap``, ``qemu-user-static`` and an enabled ``qemu-aarch64`` binfmt_misc
entry; anything missing raises ``PiDeviceError`` with the command that fixes it (the test fails
with it; it never skips). ``python tests/pi_device.py build`` builds (or checks) the cache alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
ARCH = "arm64"
PACKAGES = ("python3", "python3-numpy", "python3-venv", "openssh-server", "ca-certificates")
ONNXRUNTIME = os.environ.get("OPTISEG_PI_ONNXRUNTIME", "1.32.0")  # newest with a cp311 aarch64 wheel when pinned
RECIPE = {"version": 2, "suite": SUITE, "arch": ARCH, "packages": list(PACKAGES), "onnxruntime": ONNXRUNTIME}
USER = "pi"
VENV = f"/home/{USER}/optiseg-venv"
CACHE = Path(os.environ.get("OPTISEG_PI_ROOTFS", "/var/cache/optiseg-pi-rootfs"))
BINFMT = Path("/proc/sys/fs/binfmt_misc")
SETUP_HINT = "run scripts/test.sh once (it installs and enables them), or by hand:"
TOOLS_HINT = f"{SETUP_HINT} apt-get install -y debootstrap qemu-user-static binfmt-support debian-archive-keyring"
BINFMT_HINT = (
    f"{SETUP_HINT} mount -t binfmt_misc binfmt_misc {BINFMT} && update-binfmts --enable qemu-aarch64"
)
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PiDeviceError(RuntimeError):
    """The emulated Pi cannot be built or started; the message says why and what fixes it."""


# -- preconditions ------------------------------------------------------------------------------


def check_host() -> None:
    """Raise PiDeviceError naming the fix if this machine cannot build or run the emulated Pi."""
    if os.geteuid() != 0:
        raise PiDeviceError("the emulated Raspberry Pi needs root (debootstrap, chroot, mount namespaces)")
    missing = [tool for tool in ("debootstrap", "unshare", "chroot") if shutil.which(tool) is None]
    if not Path("/usr/bin/qemu-aarch64-static").is_file():
        missing.append("qemu-aarch64-static")
    if missing:
        raise PiDeviceError(f"missing {', '.join(missing)}: {TOOLS_HINT}")
    entry = BINFMT / "qemu-aarch64"
    if not (BINFMT / "status").exists():
        raise PiDeviceError(f"binfmt_misc is not mounted at {BINFMT}, so arm64 programs cannot run: {BINFMT_HINT}")
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise PiDeviceError(f"the qemu-aarch64 binfmt_misc entry is not enabled: {BINFMT_HINT}")
    if "flags: " in entry.read_text() and "F" not in entry.read_text().split("flags: ", 1)[1].split()[0]:
        raise PiDeviceError(
            "the qemu-aarch64 binfmt entry lacks the F (fix binary) flag, so it cannot run inside a chroot: "
            "install Debian's qemu-user-static (not qemu-user) and run update-binfmts --enable qemu-aarch64"
        )


def debian_mirror() -> str:
    """The Debian mirror apt uses here (``OPTISEG_PI_MIRROR`` wins), else deb.debian.org (e.g. on Ubuntu)."""
    if os.environ.get("OPTISEG_PI_MIRROR"):
        return os.environ["OPTISEG_PI_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        uris = re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            if uri.rstrip("/").endswith("/debian") and uri.startswith(("http://", "https://")):
                return uri
    return "http://deb.debian.org/debian"


# -- the cached rootfs --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL this process when the test process dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _namespaced(script: str) -> list[str]:
    """Run SCRIPT as PID 1 of a private mount and PID namespace: its mounts and processes end with it."""
    return ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child",
            "/bin/sh", "-euc", script]  # fmt: skip


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    with open("/proc/self/mounts") as handle:
        points = [line.split()[1].replace("\\040", " ") for line in handle]
    return [point for point in points if (point + "/").startswith(prefix)]


def _remove(path: Path) -> None:
    """rm -rf PATH, refusing if anything is mounted below it (a bind-mounted /dev must never be emptied)."""
    if not path.exists():
        return
    mounted = _mounts_under(path)
    if mounted:
        raise PiDeviceError(f"not removing {path}: {', '.join(mounted)} mounted below it; unmount them first")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def rootfs_ready(rootfs: Path) -> bool:
    stamp = rootfs / "etc" / "optiseg-pi-recipe.json"
    try:
        return json.loads(stamp.read_text()) == RECIPE
    except (OSError, ValueError):
        return False


def ensure_rootfs(cache: Path = CACHE, log=None) -> Path:
    """The cached rootfs, built first if missing or made by another recipe. Returns its path."""
    check_host()
    rootfs = cache / "rootfs"
    if rootfs_ready(rootfs):
        return rootfs
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a concurrent run waits and then reuses it
        if rootfs_ready(rootfs):
            return rootfs
        for stale in cache.glob(".build-*"):  # left by a killed build
            _remove(stale)
        build = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            _build(build / "rootfs", log or sys.stderr, lock.fileno())
            if rootfs.exists():
                rootfs.rename(build / "old")
            (build / "rootfs").rename(rootfs)
        finally:
            _remove(build)
    return rootfs


def _build(target: Path, log, lock_fd: int) -> None:
    mirror = debian_mirror()
    env = {"PATH": CHROOT_PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}

    def step(what: str, script: str, timeout: float) -> None:
        log.write(f"[pi-rootfs] {what}\n")
        log.flush()
        try:
            done = subprocess.run(_namespaced(script), env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, errors="replace", timeout=timeout, preexec_fn=_die_with_parent,
                                  pass_fds=(lock_fd,))  # fmt: skip
        except subprocess.TimeoutExpired:
            raise PiDeviceError(f"building the emulated Pi: {what} took more than {timeout:.0f} s") from None
        if done.returncode != 0:
            raise PiDeviceError(
                f"building the emulated Pi: {what} failed (exit {done.returncode}):\n"
                f"{(done.stdout + done.stderr).strip()[-3000:]}"
            )

    # debootstrap mounts /proc and /sys in the target itself: only inside this namespace.
    step(
        f"debootstrap --arch={ARCH} {SUITE} from {mirror}",
        f"debootstrap --arch={ARCH} --variant=minbase --include={','.join(PACKAGES)} "
        f"{SUITE} {shlex.quote(str(target))} {shlex.quote(mirror)}",
        timeout=3600,
    )
    t = shlex.quote(str(target))
    # This machine's CA bundle, for pip in the device only while building (a TLS-inspecting proxy on
    # the way to PyPI has its own CA there); removed afterwards, the device keeps Debian's CAs.
    bundle = _host_ca_bundle()
    cert = ""
    if bundle:
        shutil.copyfile(bundle, target / "tmp" / "host-ca.crt")
        cert = "--cert /tmp/host-ca.crt"
    chroot = f"chroot {t} /usr/bin/env -i PATH={CHROOT_PATH} LANG=C.UTF-8 HOME=/home/{USER}"
    as_pi = f"{chroot} /usr/sbin/runuser -u {USER} --"
    step(
        f"user {USER}, {VENV} with onnxruntime=={ONNXRUNTIME} from PyPI (no /sys)",
        f"""
        cp /etc/resolv.conf {t}/etc/resolv.conf
        mount -t proc proc {t}/proc
        mount --bind /dev {t}/dev
        {chroot} /usr/sbin/useradd --create-home --shell /bin/bash {USER}
        {chroot} /usr/sbin/usermod --password '*' {USER}  # no password login, but not locked (sshd refuses that)
        {chroot} /usr/bin/install -d -o {USER} -g {USER} -m 700 /home/{USER}/.ssh
        {chroot} /usr/bin/install -d -m 755 /run/sshd
        {as_pi} python3 -m venv --system-site-packages {VENV}
        {as_pi} {VENV}/bin/pip install --no-cache-dir --disable-pip-version-check {cert} onnxruntime=={ONNXRUNTIME}
        {as_pi} {VENV}/bin/python -c 'import numpy, onnxruntime; print(numpy.__file__, onnxruntime.__version__)'
        """,
        timeout=3600,
    )
    (target / "tmp" / "host-ca.crt").unlink(missing_ok=True)
    (target / "etc" / "optiseg-pi-recipe.json").write_text(json.dumps(RECIPE))


def _host_ca_bundle() -> str | None:
    """The CA bundle pip uses on this machine: PIP_CERT, pip's config `cert`, else the system bundle."""
    candidates = [os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"), os.environ.get("SSL_CERT_FILE")]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
        candidates += re.findall(r"^[\w:.-]*\.cert='([^']+)'", done.stdout, re.M)
    candidates.append("/etc/ssl/certs/ca-certificates.crt")
    return next((path for path in candidates if path and Path(path).is_file()), None)


# -- the running device -------------------------------------------------------------------------


@dataclass
class PiDevice:
    host: str
    port: int
    user: str
    python: str
    rootfs: Path
    client_key: Path
    folder: Path
    log: Path
    process: subprocess.Popen

    def host_key_fingerprints(self) -> list[str]:
        """What `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` prints on the device (run by its own ssh-keygen)."""
        prints = []
        for pub in sorted((self.rootfs / "etc" / "ssh").glob("ssh_host_*_key.pub")):
            done = subprocess.run(["chroot", str(self.rootfs), "/usr/bin/ssh-keygen", "-lf", f"/etc/ssh/{pub.name}"],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            prints.append(done.stdout.split()[1])
        return prints

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """End sshd and with it every process and mount of its namespace."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_banner(port: int, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.settimeout(10)
                if sock.recv(64).startswith(b"SSH-2.0-OpenSSH_"):
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def start_pi(folder: Path, rootfs: Path | None = None) -> PiDevice:
    """Start the emulated Pi's sshd on 127.0.0.1 (building the cached rootfs first if needed)."""
    rootfs = rootfs or ensure_rootfs()
    folder.mkdir(parents=True, exist_ok=True)
    client_key = folder / "id_ed25519"
    if not client_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "optiseg-pi-test", "-f", str(client_key)],
                       check=True, capture_output=True)  # fmt: skip
    passwd = (rootfs / "etc" / "passwd").read_text()
    uid, gid = re.search(rf"^{USER}:[^:]*:(\d+):(\d+):", passwd, re.M).groups()
    last = ""
    for _ in range(3):
        port = _free_port()
        layer = Path(tempfile.mkdtemp(prefix=f"overlay-{port}-", dir=folder))
        upper, work, merged = (layer / name for name in ("upper", "work", "merged"))
        for path in (upper, work, merged):
            path.mkdir()
        m = shlex.quote(str(merged))
        keys = f"{m}/home/{USER}/.ssh/authorized_keys"
        script = f"""
        mount -t overlay overlay -o lowerdir={shlex.quote(str(rootfs))},upperdir={shlex.quote(str(upper))},workdir={shlex.quote(str(work))} {m}
        mount -t proc proc {m}/proc
        mount --bind /dev {m}/dev
        cat {shlex.quote(str(client_key))}.pub > {keys}
        chown {uid}:{gid} {keys}
        chmod 600 {keys}
        exec chroot {m} /usr/sbin/sshd -D -e -o Port={port} -o ListenAddress=127.0.0.1 -o UsePAM=no \
            -o PasswordAuthentication=no -o PidFile=/run/sshd.pid -o LogLevel=VERBOSE
        """
        log = folder / f"sshd-{port}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(_namespaced(script), stdout=handle, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
                                       env={"PATH": CHROOT_PATH, "LANG": "C.UTF-8"})  # fmt: skip
        if _wait_for_banner(port, process, timeout=90):
            return PiDevice("127.0.0.1", port, USER, "~/optiseg-venv/bin/python", rootfs, client_key, folder, log,
                            process)  # fmt: skip
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
        last = log.read_text(errors="replace").strip()[-2000:]
    raise PiDeviceError(f"the emulated Pi's sshd did not start: {last}")


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit(f"usage: {sys.argv[0]} build    (builds or checks the cached rootfs in {CACHE})")
    started = time.monotonic()
    try:
        path = ensure_rootfs()
    except PiDeviceError as exc:
        sys.exit(f"error: {exc}")
    print(f"{path} ready in {time.monotonic() - started:.0f} s")
