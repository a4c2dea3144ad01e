"""Time models on a device over SSH (paramiko), with deadlines around every remote step.

One connection is opened on first use and reused for every model; on the first
connection the device is checked for everything a measurement needs (Python,
numpy, an onnxruntime that reads optiseg's opset, the shell tools, free disk in
the runner's folder) and refused with the fix if anything is missing. Per model:
upload to a temporary name in the runner's own folder on the device, check
its sha256 there, rename it, and run ``measure_onnx.py`` under ``timeout``.
Transient network failures after the device has once answered are retried
with capped exponential backoff; a changed boot id on reconnection means the
device rebooted, and the measurement starts again from scratch (a figure is
only ever taken from a complete run). A script killed by a signal, a full disk
or an interpreter that prints something else are reported as what they are and
never retried: they would fail the same way. The timing process keeps its SSH
channel's stdin open and ends itself at EOF, so it dies with the session (a
killed search, a closed connection). Every argument of a remote command is
quoted with ``shlex.quote``; commands run through ``sh -c``.
"""

from __future__ import annotations

import io
import logging
import os
import select
import shlex
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import paramiko

from ..config.device import DeviceConfig
from ..errors import DeviceError
from . import hostkeys
from ._base import CodecStep, LatencyResult
from ._model import ModelFile, inspect_model
from ._script import (
    RUNNER_FILES,
    SCRIPT_NAME,
    STATUS_TIMED_OUT,
    STATUS_NO_PYTHON,
    STATUS_NO_TIMEOUT_TOOL,
    ScriptContext,
    device_key,
    latency_result,
    parse_output,
    script_arguments,
    script_source,
    shell_word,
)
from .target import SSHTarget, open_socket, resolve_target

log = logging.getLogger("optiseg.devices")
# paramiko logs transport failures with tracebacks; optiseg reports them as DeviceErrors instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

MAX_BACKOFF_S = 30.0
KILL_AFTER_S = 5  # the device's `timeout` sends SIGKILL this long after SIGTERM
COMMAND_GRACE_S = 15.0  # the local deadline of a command: its remote timeout plus this
KEEPALIVE_S = 15
DISK_MARGIN = 1 << 20  # an upload that failed with less than its size plus this free failed for want of space
OUTPUT_LIMIT = 1 << 20
STATUS_CHECKSUM_MISMATCH = 65
STATUS_NO_SHA256SUM = 92
STATUS_STORE_FAILED = 93

T = TypeVar("T")


class _Transient(Exception):
    """A network failure worth a retry (the device answered before)."""


class _Deadline:
    """Runs ``on_expire`` (which closes the connection) if the block has not finished within ``seconds``."""

    def __init__(self, seconds: float, on_expire: Callable[[], None]):
        self.expired = False
        self._on_expire = on_expire
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.expired = True
        self._on_expire()

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()


class SSHRunner:
    """Measures on one SSH device; see the module docstring for the protocol."""

    def __init__(self, config: DeviceConfig, *, sleep: Callable[[float], None] = time.sleep):
        if config.kind != "ssh":
            raise ValueError(f"SSHRunner needs a device config of kind ssh, not {config.kind!r}")
        self.config = config
        self.target: SSHTarget = resolve_target(config)
        self.device_key = device_key(
            f"ssh:{self.target.user}@{self.target.hostname}:{self.target.port}", config.measure
        )
        self._sleep = sleep
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sock: Any = None
        self._sftp: paramiko.SFTPClient | None = None
        self._ready = False  # connected once, folder made and script uploaded: failures after this are retried
        self._workdir: str | None = None
        self._boot_id: str | None = None
        self._script_uploaded = False
        self._verified = False  # the device was checked for what a measurement needs
        self._model_on_device: str | None = None  # remote file name of the last uploaded model
        self.reconnects = 0
        self.reboots = 0
        self.uploads = 0

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def workdir(self) -> str | None:
        """This runner's own folder on the device (None before the first connection)."""
        return self._workdir

    def connect(self) -> None:
        """Connect, make the folder on the device, upload the script and check that the device can measure.

        A device that cannot (no python3, numpy or onnxruntime, an onnxruntime too old for optiseg's
        opset, a missing shell tool, too little free disk) raises a :class:`DeviceError` naming the host
        and the fix, and nothing is left on it.
        """
        with self._lock:
            self._attempts("connecting", self._verify)

    def measure(self, onnx_path: str | os.PathLike, codec: CodecStep | None = None) -> LatencyResult:
        """Time the model on the device (see :class:`LatencyResult` for the figures)."""
        started = time.perf_counter()
        model = inspect_model(onnx_path)
        with self._lock:
            payload = self._attempts(f"measuring {model.path.name}", lambda: self._verify() or self._measure_once(model, codec))
        return latency_result(
            payload, device_key=self.device_key, model_sha256=model.sha256, wall_s=time.perf_counter() - started
        )

    def link_test(self, nbytes: int = 8_000_000, rounds: int = 20):
        """Round-trip time and bandwidth each way between this machine and the device (see :mod:`.link`)."""
        from .link import measure_link

        with self._lock:
            self._attempts("connecting", self._ensure_connected)
            assert self._client is not None
            transport = self._client.get_transport()
            seconds = self.config.command_timeout
            return self._remote("testing the link", seconds,
                                lambda: measure_link(transport, self.target.where, nbytes, rounds, self.config.connect_timeout))

    def check(self) -> dict[str, Any]:
        """The device's facts for `optiseg device check`; a missing interpreter is reported, not raised."""
        with self._lock:
            facts = self._attempts("checking", self._facts_once)
        return {
            "device": self.label,
            "where": self.target.where,
            "python": self.config.python,
            "shell": self.target.shell,
            "facts": facts,
        }

    def close(self) -> None:
        """Remove this runner's folder from the device and close the connection."""
        with self._lock:
            self._remove_folder()

    def __enter__(self) -> "SSHRunner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- attempts and connection ---------------------------------------------------------------

    def _attempts(self, step: str, action: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                self._ensure_connected()
                return action()
            except _Transient as exc:
                self._disconnect()
                if attempt >= self.config.retries:
                    raise DeviceError(
                        f"{step} on {self.target.where} failed after {attempt + 1} attempts: {exc}",
                        hint=f"check the device's power, network and free disk (`{self._check_command()}`); "
                        "device.retries and device.retry_backoff set how long optiseg keeps trying",
                    ) from None
                delay = min(self.config.retry_backoff * 2**attempt, MAX_BACKOFF_S)
                attempt += 1
                log.warning(
                    "%s on %s: %s; retrying in %.1f s (%d of %d)",
                    step, self.target.where, exc, delay, attempt, self.config.retries,
                )  # fmt: skip
                self._sleep(delay)
            except BaseException:
                if not self._connected():
                    self._disconnect()
                raise

    def _connected(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active() and transport.is_authenticated()

    def _ensure_connected(self) -> None:
        if self._connected():
            return
        self._disconnect()
        if self._ready:
            self.reconnects += 1
        self._connect()
        try:
            self._prepare_folder()
        except DeviceError:
            self._remove_folder()  # e.g. the script's upload failed: nothing stays on the device
            raise
        self._ready = True

    def _verify(self) -> None:
        """Once per runner: refuse a device that cannot measure, removing this runner's folder from it."""
        if self._verified:
            return
        from .check import require_ready

        try:
            facts = self._facts_once()
            require_ready(
                {"where": self.target.where, "python": self.config.python, "shell": self.target.shell, "facts": facts}
            )
        except DeviceError:
            self._remove_folder()
            raise
        self._verified = True

    def _remove_folder(self) -> None:
        """Remove this runner's folder from the device (if it can still be reached) and start afresh next time."""
        if self._workdir is not None and self._connected():
            try:
                self._run(f"rm -rf -- {shlex.quote(self._workdir)}", self.config.connect_timeout, "cleaning up")
            except (DeviceError, _Transient) as exc:
                log.warning("could not remove %s on %s: %s", self._workdir, self.target.where, exc)
        self._workdir = None
        self._script_uploaded = False
        self._model_on_device = None
        self._ready = False
        self._disconnect()

    def _abort(self) -> None:
        """Close the connection from the deadline's thread: whatever waits on it fails at once."""
        client, sock = self._client, self._sock
        if client is not None:
            client.close()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _disconnect(self) -> None:
        for closable in (self._sftp, self._client, self._sock):
            if closable is not None:
                try:
                    closable.close()
                except (OSError, EOFError, paramiko.SSHException):
                    pass
        self._sftp = self._client = self._sock = None

    def _connect(self) -> None:
        auth = self._auth_arguments()
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(hostkeys.RefuseUnknownHost())
        for path in self.target.known_hosts:
            if path.is_file():
                try:
                    client.load_system_host_keys(str(path))
                except (OSError, UnicodeDecodeError) as exc:
                    raise DeviceError(f"cannot read the known_hosts file {path}: {exc}") from None
        try:
            self._open(client, auth)
        except BaseException:
            self._disconnect()
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_S)

    def _open(self, client: paramiko.SSHClient, auth: dict[str, Any]) -> None:
        target, timeout = self.target, self.config.connect_timeout
        with _Deadline(timeout, self._abort) as deadline:
            try:
                self._sock = open_socket(target, timeout)
                self._client = client
                client.connect(
                    target.hostname,
                    port=target.port,
                    username=target.user,
                    sock=self._sock,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    channel_timeout=timeout,
                    **auth,
                )
            except hostkeys.UnknownHostKey as exc:
                raise hostkeys.unknown_host_error(self.target, exc.key) from None
            except paramiko.BadHostKeyException as exc:
                raise hostkeys.changed_host_error(self.target, exc.key, exc.expected_key) from None
            except (OSError, EOFError, paramiko.SSHException) as exc:
                transport = client.get_transport()
                if isinstance(exc, paramiko.AuthenticationException) or (
                    transport is not None and transport.is_active() and not transport.is_authenticated()
                ):
                    raise self._auth_error(exc) from None
                reason = (
                    f"no answer within {timeout:g} s (device.connect_timeout)"
                    if deadline.expired
                    else _describe_network_error(exc, target.hostname)
                )
                if self._ready:
                    raise _Transient(f"cannot reconnect: {reason}") from None
                raise DeviceError(
                    f"cannot connect to {target.where}: {reason}",
                    hint=f"check that the device is on and reachable (`ping {target.hostname}`), that sshd runs "
                    f"there (`sudo systemctl enable --now ssh`) and that host and port are right "
                    f"(`{shlex.join(target.ssh_words())} true`)",
                ) from None

    def _auth_arguments(self) -> dict[str, Any]:
        target = self.target
        if target.key_file is not None:
            # An explicit key is the only one tried: a broken agent could otherwise hang the login.
            return {"pkey": _load_private_key(target.key_file), "allow_agent": False, "look_for_keys": False}
        files = [str(path) for path in target.identity_files if path.is_file()]
        return {
            "key_filename": files or None,
            "allow_agent": not target.identities_only and bool(os.environ.get("SSH_AUTH_SOCK")),
            "look_for_keys": not target.identities_only,
        }

    def _prepare_folder(self) -> None:
        """Read the boot id; reuse this runner's folder if the device did not reboot, else make a fresh one."""
        old_folder, old_boot = self._workdir or "", self._boot_id or ""
        script = (
            "boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)\n"
            f"old={shlex.quote(old_folder)}\n"
            f'if [ -n "$old" ] && [ "$boot" = {shlex.quote(old_boot)} ] && [ -d "$old" ]; then\n'
            '  w=$old; rm -f -- "$w"/.*.part\n'
            "else\n"
            '  if [ -n "$old" ]; then rm -rf -- "$old"; fi\n'
            '  w=$(mktemp -d "${TMPDIR:-/tmp}/optiseg.XXXXXXXX") || exit 1\n'
            "fi\n"
            "printf '%s\\n%s\\n' \"$boot\" \"$w\"\n"
        )
        status, out, err = self._run(script, self.config.command_timeout, "preparing a folder")
        lines = out.splitlines()[-2:]  # a chatty login shell may print before
        if status != 0 or len(lines) != 2:
            tmp = '"${TMPDIR:-/tmp}"'
            raise DeviceError(
                f"cannot make a working folder on {self.target.where}: {err.strip() or f'exit status {status}'}",
                hint="optiseg needs a writable folder for temporary files on the device: /tmp, or $TMPDIR where it is "
                f"set (check with `{self._context().on_device(f'df -h {tmp}; mount | grep -e /tmp -e ro,')}`), "
                "and mktemp (coreutils)",
            )
        boot, folder = lines
        if self._boot_id is not None and boot != self._boot_id:
            self.reboots += 1
            log.warning("%s rebooted (its boot id changed); measuring again from scratch", self.target.where)
        if folder != self._workdir:
            self._script_uploaded = False
            self._model_on_device = None
        self._boot_id, self._workdir = boot, folder
        if not self._script_uploaded:
            self._upload_script()
            self._script_uploaded = True

    # -- remote steps --------------------------------------------------------------------------

    def _check_command(self) -> str:
        python = [] if self.config.python == "python3" else ["--python", self.config.python]
        return shlex.join(["optiseg", "device", "check", *self.target.cli_arguments(), *python])

    def _context(self) -> ScriptContext:
        return ScriptContext(
            where=self.target.where,
            python=self.config.python,
            timeout=self.config.command_timeout,
            shell=self.target.shell,
        )

    def _remote(self, what: str, seconds: float, action: Callable[[], T]) -> T:
        """Run one remote step under a deadline; network failures become retryable once the device has answered.

        A command the device itself stops (its ``timeout``) reports that through its exit status; this
        deadline is the backstop for a device or network that stops answering altogether.
        """
        with _Deadline(seconds, self._abort) as deadline:
            try:
                return action()
            except (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError) as exc:
                reason = (
                    f"{what}: no answer from the device within {seconds:g} s"
                    if deadline.expired
                    else f"{what}: {_describe_network_error(exc, self.target.hostname)}"
                )
                if not self._ready:
                    raise DeviceError(f"{reason} on {self.target.where}") from None
                raise _Transient(reason) from None

    def _run(self, script: str, seconds: float, what: str, *, keep_stdin: bool = False) -> tuple[int, str, str]:
        """Run ``script`` with ``sh -c`` on the device: (exit status, stdout, stderr), both streams read to the end.

        With ``keep_stdin`` the command's stdin stays open until it ends (the script's watchdog reads it);
        otherwise it reads EOF at once.
        """
        return self._remote(what, seconds, lambda: self._exec(script, keep_stdin))

    def _exec(self, script: str, keep_stdin: bool = False) -> tuple[int, str, str]:
        if self._client is None or self._client.get_transport() is None:
            raise EOFError("not connected")
        transport = self._client.get_transport()
        channel = transport.open_session(timeout=self.config.connect_timeout)
        try:
            channel.exec_command("sh -c " + shlex.quote(script))
            if not keep_stdin:
                channel.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                while channel.recv_ready():
                    _append(out, channel.recv(65536))
                while channel.recv_stderr_ready():
                    _append(err, channel.recv_stderr(65536))
                if channel.eof_received or channel.closed:
                    break
                if not transport.is_active():
                    raise EOFError("the connection was lost while a command ran")
                select.select([channel], [], [], 0.5)
            while channel.recv_ready():
                _append(out, channel.recv(65536))
            while channel.recv_stderr_ready():
                _append(err, channel.recv_stderr(65536))
            status = channel.recv_exit_status()
            if status == -1:
                raise EOFError("the connection was lost before the command's exit status arrived")
            return status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        finally:
            channel.close()

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            assert self._client is not None
            try:
                self._sftp = self._remote("opening SFTP", self.config.connect_timeout, self._client.open_sftp)
            except DeviceError as exc:
                raise DeviceError(
                    str(exc.message),
                    hint="optiseg uploads models with SFTP: enable it in the device's /etc/ssh/sshd_config "
                    "(`Subsystem sftp internal-sftp`, or the sftp-server path) and restart sshd",
                ) from None
        return self._sftp

    def _put(self, source: bytes | ModelFile, name: str) -> str:
        """Upload to a temporary name in the folder (``.NAME.RANDOM.part``); return that name."""
        assert self._workdir is not None
        temporary = f".{name}.{uuid.uuid4().hex[:8]}.part"
        remote_temporary = f"{self._workdir}/{temporary}"
        sftp = self._sftp_client()

        def put() -> None:
            if isinstance(source, bytes):
                sftp.putfo(io.BytesIO(source), remote_temporary, file_size=len(source), confirm=True)
            else:
                sftp.put(str(source.path), remote_temporary, confirm=True)

        self.uploads += 1
        try:
            self._remote(f"uploading {name}", self.config.transfer_timeout, put)
        except (DeviceError, _Transient):
            size = len(source) if isinstance(source, bytes) else source.size
            self._after_failed_upload(temporary, name, size)
            raise
        return temporary

    def _after_failed_upload(self, temporary: str, name: str, size: int) -> None:
        """Remove the partial upload; raise the "no space left" error if the disk is what failed it.

        (A lost connection leaves the partial file to the next connection, which removes ``.*.part``.)
        """
        if self._workdir is None or not self._connected():
            return
        folder = shlex.quote(self._workdir)
        script = f"cd {folder} && rm -f -- {shlex.quote(temporary)}; stat -f -c '%a %S' -- {folder}"
        try:
            status, out, _ = self._run(script, self.config.connect_timeout, "cleaning up after a failed upload")
            available, block = (int(word) for word in out.split()[-2:])
        except (DeviceError, _Transient, ValueError):
            return
        free = available * block
        if status == 0 and free < size + DISK_MARGIN:
            raise DeviceError(
                f"no space left on the device ({free / 2**20:.1f} MB free in {self._workdir}) for {name} "
                f"({size / 2**20:.1f} MB) on {self.target.where}",
                hint="free some space on the device ("
                + self._context().on_device(f"df -h {folder}; sudo apt-get clean")
                + "), or set TMPDIR on the device to a folder on a larger disk; then check with "
                f"`{self._check_command()}`",
            )

    @staticmethod
    def _store_lines(temporary: str, name: str, sha256: str, previous: str | None = None) -> str:
        """Shell lines, run in the folder, that check the upload's sha256, rename it, and delete ``previous``."""
        part = shlex.quote(temporary)
        return (
            f"command -v sha256sum >/dev/null 2>&1 || {{ rm -f -- {part}; exit {STATUS_NO_SHA256SUM}; }}\n"
            f"set -- $(sha256sum -- {part})\n"
            f'[ "$1" = {shlex.quote(sha256)} ] || {{ rm -f -- {part}; exit {STATUS_CHECKSUM_MISMATCH}; }}\n'
            f"mv -f -- {part} {shlex.quote(name)} || {{ rm -f -- {part}; exit {STATUS_STORE_FAILED}; }}\n"
            + (f"rm -f -- {shlex.quote(previous)}\n" if previous and previous != name else "")
        )

    def _raise_for_store(self, status: int, err: str, name: str) -> None:
        if status == STATUS_CHECKSUM_MISMATCH:
            raise _Transient(f"the upload of {name} arrived damaged (sha256 differs)")
        if status == STATUS_NO_SHA256SUM:
            raise DeviceError(
                f"sha256sum is missing on {self.target.where}; optiseg checks every upload with it",
                hint="install it: " + self._context().on_device("sudo apt-get install -y coreutils"),
            )
        if status == STATUS_STORE_FAILED:
            raise DeviceError(
                f"cannot store {name} in {self._workdir} on {self.target.where}: {err.strip() or 'mv failed'}",
                hint="check the free disk space: " + self._check_command(),
            )

    def _upload_script(self) -> None:
        for name in RUNNER_FILES:
            source = script_source(name)
            temporary = self._put(source, name)
            script = f"cd {shlex.quote(self._workdir or '')} || exit {STATUS_STORE_FAILED}\n"
            script += self._store_lines(temporary, name, _sha256(source))
            status, _, err = self._run(script, self.config.command_timeout, f"storing {name}")
            self._raise_for_store(status, err, name)
            if status != 0:
                raise DeviceError(f"cannot store {name} on {self.target.where}: {err.strip() or status}")

    def _script_command(self, arguments: list[str], *, require_timeout: bool, before: str = "") -> str:
        """The shell script that runs ``measure_onnx.py`` in the folder under the device's ``timeout``
        (after the lines ``before``).

        The shell waits for the script rather than ``exec`` it, so that a signal that kills the script
        (through ``timeout``, which re-raises it) comes back as the exit status 128 + N, not as a lost
        status; ``--exit-with-parent`` ends the script when the SSH channel's stdin closes.
        """
        assert self._workdir is not None
        python = shell_word(self.config.python)
        limit = f"{self.config.command_timeout:g}"
        run = " ".join([python, SCRIPT_NAME, *(shlex.quote(a) for a in arguments), "--exit-with-parent"])
        timeout_missing = f"exit {STATUS_NO_TIMEOUT_TOOL}" if require_timeout else run
        return "".join(
            [
                f"cd {shlex.quote(self._workdir)} || exit {STATUS_STORE_FAILED}\n",
                before,
                f"command -v {python} >/dev/null 2>&1 || exit {STATUS_NO_PYTHON}\n",
                "if command -v timeout >/dev/null 2>&1; then\n",
                f"  timeout -k {KILL_AFTER_S} {limit} {run}\n",
                f"else\n  {timeout_missing}\nfi\n",
                "exit $?\n",
            ]
        )

    def _run_script(self, command: str, what: str) -> tuple[int, str, str, int | None]:
        """Run a script command: (status, stdout, stderr, the number of the signal that killed the script or None)."""
        started = time.monotonic()
        status, out, err = self._run(command, self.config.command_timeout + COMMAND_GRACE_S, what, keep_stdin=True)
        elapsed = time.monotonic() - started
        killed_by = None
        # 137 is SIGKILL: from `timeout -k` only once the time is up, before that from elsewhere (the OOM killer).
        if (status > 128 and status not in STATUS_TIMED_OUT) or (status == 137 and elapsed < self.config.command_timeout):
            killed_by = status - 128
        return status, out, err, killed_by

    def _measure_once(self, model: ModelFile, codec: CodecStep | None = None) -> dict[str, Any]:
        """Upload the model unless it is already there, then check, rename and time it in one command."""
        name = f"model-{model.sha256[:16]}.onnx"
        store = ""
        if self._model_on_device != name:
            store = self._store_lines(self._put(model, name), name, model.sha256, previous=self._model_on_device)
            self._model_on_device = None
        command = self._script_command([name, *script_arguments(self.config.measure, codec)], require_timeout=True, before=store)
        status, out, err, killed_by = self._run_script(command, f"measuring {model.path.name}")
        self._raise_for_store(status, err, name)
        self._model_on_device = name
        payload = parse_output(status, out, err, self._context(), killed_by=killed_by)
        if payload.get("boot_id") and self._boot_id and payload["boot_id"] != self._boot_id:
            raise _Transient("the device rebooted during the measurement")
        return payload

    def _facts_once(self) -> dict[str, Any]:
        assert self._workdir is not None
        command = self._script_command(["--facts", "--disk-path", self._workdir], require_timeout=False)
        status, out, err, killed_by = self._run_script(command, "reading the device's facts")
        if status == STATUS_NO_PYTHON:
            return {"ok": False, "python_found": False}
        payload = parse_output(status, out, err, self._context(), killed_by=killed_by)
        return {**payload, "python_found": True}

    # -- errors ----------------------------------------------------------------------------------

    def _auth_error(self, exc: Exception) -> DeviceError:
        target = self.target
        if target.key_file is not None:
            tried = f"the key {target.key_file}"
            public = f"{target.key_file}.pub"
        else:
            tried = "the SSH agent, ~/.ssh/config IdentityFile and ~/.ssh/id_*"
            public = "~/.ssh/id_ed25519.pub"
        port = "" if target.port == 22 else f" -p {target.port}"
        return DeviceError(
            f"authentication as {target.user} on {target.hostname}:{target.port} failed ({tried}): {exc}",
            hint=f"install your public key on the device: `ssh-copy-id -i {public}{port} {target.user}@{target.alias}`; "
            "or set device.user / device.key_file",
        )


def _load_private_key(path: Any) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except OSError as exc:
        raise DeviceError(
            f"cannot read the key file {path}: {exc.strerror or exc}", hint="fix device.key_file"
        ) from None
    except TypeError:  # cryptography: the key is encrypted and no password was given
        raise DeviceError(
            f"the key file {path} is protected by a passphrase",
            hint=f"load it into your SSH agent (`ssh-add {shlex.quote(str(path))}`) and remove device.key_file",
        ) from None
    except (ValueError, paramiko.SSHException) as exc:
        raise DeviceError(
            f"{path} is not a private key optiseg can use (OpenSSH or PEM; Ed25519, ECDSA or RSA): {exc}",
            hint="point device.key_file at the private key (not the .pub file)",
        ) from None


def _describe_network_error(exc: BaseException, hostname: str) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name {hostname!r}"
    if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        return "connection refused (nothing listens on that port)"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer in time"
    if isinstance(exc, EOFError):
        return str(exc) or "the connection was closed by the device"
    return str(exc) or type(exc).__name__


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _append(buffer: bytearray, chunk: bytes) -> None:
    if len(buffer) < OUTPUT_LIMIT:
        buffer += chunk
