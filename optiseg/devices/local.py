"""Time models on this machine, in a separate process with a pinned thread count."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from typing import Any

from .._runners.measure_onnx import THREAD_VARIABLES
from ..config.device import DeviceConfig
from ..errors import DeviceError
from ._base import CodecStep, LatencyResult
from ._model import inspect_model
from ._script import SCRIPT_NAME, ScriptContext, device_key, latency_result, parse_output, script_arguments, timeout_error


class LocalRunner:
    """Runs ``runners/measure_onnx.py`` with this Python in a child process.

    The child has its own interpreter, so training or other Python threads in this
    process do not share its thread pools; ``OMP_NUM_THREADS`` and friends and
    onnxruntime's ``intra_op_num_threads`` are pinned to ``measure.threads``.
    """

    def __init__(self, config: DeviceConfig):
        if config.kind != "local":
            raise ValueError(f"LocalRunner needs a device config of kind local, not {config.kind!r}")
        self.config = config
        self.device_key = device_key(f"local:{socket.gethostname()}", config.measure)
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.config.label

    def connect(self) -> None:
        """Check now that this Python can measure (numpy, an onnxruntime that reads optiseg's opset)."""
        from .check import require_ready

        require_ready(self.check(), uploads=False)

    def measure(self, onnx_path: str | os.PathLike, codec: CodecStep | None = None) -> LatencyResult:
        """Time the model in a child process (see :class:`LatencyResult` for the figures)."""
        started = time.perf_counter()
        model = inspect_model(onnx_path)
        with self._lock:
            payload = self._run([str(model.path), *script_arguments(self.config.measure, codec)])
        return latency_result(
            payload, device_key=self.device_key, model_sha256=model.sha256, wall_s=time.perf_counter() - started
        )

    def check(self) -> dict[str, Any]:
        """This machine's facts, as the script reports them (missing modules included)."""
        with self._lock:
            facts = self._run(["--facts", "--disk-path", tempfile.gettempdir()])
        facts["python_found"] = True
        return {"device": self.label, "where": self._context().where, "python": sys.executable, "shell": None, "facts": facts}

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "LocalRunner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _context(self) -> ScriptContext:
        return ScriptContext(
            where=f"this machine ({socket.gethostname()})", python=sys.executable, timeout=self.config.command_timeout
        )

    def _run(self, arguments: list[str]) -> dict[str, Any]:
        env = dict(os.environ)
        if self.config.measure.threads:
            env.update({name: str(self.config.measure.threads) for name in THREAD_VARIABLES})
        context = self._context()
        with resources.as_file(resources.files("optiseg._runners").joinpath(SCRIPT_NAME)) as script:
            # The child reads EOF on this pipe (and sees a new parent) the moment this process dies,
            # however it dies, and then ends itself (--exit-with-parent).
            read_end, write_end = os.pipe()
            try:
                process = subprocess.Popen(
                    [sys.executable, str(script), *arguments, "--exit-with-parent"],
                    stdin=read_end,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            except OSError as exc:
                os.close(write_end)
                raise DeviceError(f"cannot start {sys.executable} to measure: {exc}") from None
            finally:
                os.close(read_end)
            try:
                stdout, stderr = process.communicate(timeout=self.config.command_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise timeout_error(context) from None
            except BaseException:
                process.kill()
                process.wait()
                raise
            finally:
                os.close(write_end)
        status = process.returncode
        return parse_output(status, stdout, stderr, context, killed_by=-status if status < 0 else None)
