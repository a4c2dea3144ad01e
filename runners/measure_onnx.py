#!/usr/bin/env python3
"""Time one ONNX model with onnxruntime on this machine; print exactly one JSON line.

This script runs on the device. It needs Python 3.7+, numpy and onnxruntime, and
never imports optiseg, so it can be copied anywhere and run by hand:

    python3 measure_onnx.py MODEL.onnx [--threads N] [--warmup 10] [--min-runs 50]
                            [--min-seconds 2] [--graph-optimization all]
    python3 measure_onnx.py --facts [--disk-path DIR]

With ``--encode-bits B`` each timed run also encodes the model's outputs as one
frame at B bits per value (``tensor_codec.py``, next to this script): the device
side of a split network, which sends what crosses the cut. With ``--decode-bits B``
each timed run first decodes a frame of the model's inputs encoded at B bits: the
server side. The payload then says so (``codec``) with the frame's size in bytes.

With ``--exit-with-parent`` the script ends (exit status 4, no output) as soon as
its standard input reaches end-of-file or its parent process is gone: the caller
keeps a pipe (or an SSH channel) open while it waits, so a killed caller or a
dropped SSH session never leaves a timing process running on the device.

Protocol (onnxruntime perf test / MLPerf single-stream): session creation is
timed apart, ``--warmup`` untimed runs follow, then timed runs until both
``--min-runs`` runs and ``--min-seconds`` seconds are reached. Inputs are random
data of the model's own shape (a free batch dimension is set to 1).

Output: ``{"ok": true, ...}`` with the statistics in milliseconds and the
device's facts, or ``{"ok": false, "error": ..., "kind": ...}`` and exit status 3.
``--facts`` reports the facts even when numpy or onnxruntime are missing.
"""

import argparse
import faulthandler
import json
import math
import os
import platform
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

FAILED = 3
PARENT_GONE = 4
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
ARM_CORES = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
}
NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class Failure(Exception):
    def __init__(self, kind, message, **extra):
        Exception.__init__(self, message)
        self.kind = kind
        self.extra = extra


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time one ONNX model with onnxruntime; print one JSON line.")
    parser.add_argument("model", nargs="?", help="the .onnx file")
    parser.add_argument("--facts", action="store_true", help="report the device's facts instead of measuring")
    parser.add_argument("--disk-path", default=None, help="folder whose free space --facts reports")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads; 0 = every usable core")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--graph-optimization", choices=("disable", "basic", "extended", "all"), default="all")
    codec = parser.add_mutually_exclusive_group()
    codec.add_argument("--encode-bits", type=int, choices=(32, 16, 8, 4), help="also encode the outputs (split: device side)")
    codec.add_argument("--decode-bits", type=int, choices=(32, 16, 8, 4), help="first decode the inputs (split: server side)")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="end when stdin reaches EOF or the parent process is gone"
    )
    args = parser.parse_args(argv)
    faulthandler.enable()  # a crash in onnxruntime or numpy leaves a Python traceback on stderr
    if args.exit_with_parent:
        watch_parent()
    threads = args.threads if args.threads > 0 else usable_cores()
    # Pinned before numpy or onnxruntime is imported: their thread pools read these once.
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        if args.facts:
            payload = facts(args.disk_path or os.getcwd())
            payload["ok"] = True
        elif args.model is None:
            raise Failure("usage", "give a model file, or --facts")
        else:
            payload = measure(args, threads)
    except Failure as exc:
        payload = {"ok": False, "kind": exc.kind, "error": str(exc)}
        payload.update(exc.extra)
    except Exception as exc:  # the one JSON line must come out whatever failed
        payload = {"ok": False, "kind": "internal", "error": "%s: %s" % (type(exc).__name__, exc)}
    emit(payload)
    return 0 if payload["ok"] else FAILED


def watch_parent(interval=0.5):
    """End this process when stdin reaches EOF or the parent changes (it died and this one was re-parented)."""
    parent = os.getppid()

    def watch():
        stdin_open = True
        while True:
            if stdin_open:
                try:
                    readable, _, _ = select.select([0], [], [], interval)
                    if readable and not os.read(0, 65536):
                        os._exit(PARENT_GONE)
                except (OSError, ValueError):
                    stdin_open = False  # no usable stdin: the parent check alone
            else:
                time.sleep(interval)
            if os.getppid() != parent:
                os._exit(PARENT_GONE)

    thread = threading.Thread(target=watch, name="parent-watchdog")
    thread.daemon = True
    thread.start()


def emit(payload):
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def import_runtime():
    """numpy and onnxruntime, or a Failure naming every missing module."""
    modules, missing = {}, []
    for name in ("numpy", "onnxruntime"):
        try:
            modules[name] = __import__(name)
        except ImportError as exc:
            missing.append(name)
            detail = str(exc)
    if missing:
        raise Failure(
            "missing_modules",
            "missing Python modules: %s (%s)" % (", ".join(missing), detail),
            missing=missing,
            python=sys.executable,
            python_version=platform.python_version(),
            in_venv=sys.prefix != getattr(sys, "base_prefix", sys.prefix),
            externally_managed=externally_managed(),
        )
    return modules["numpy"], modules["onnxruntime"]


def measure(args, threads):
    if not os.path.isfile(args.model):
        raise Failure("model", "model file %s does not exist" % args.model)
    boot_id = read_text("/proc/sys/kernel/random/boot_id")
    np, ort = import_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[args.graph_optimization]
    options.log_severity_level = 3

    started = time.perf_counter()
    try:
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise Failure("model", "onnxruntime cannot load %s: %s" % (args.model, exc))
    session_ms = (time.perf_counter() - started) * 1000.0
    feeds = random_inputs(session, np)
    step, codec = timed_step(args, session, feeds)

    for _ in range(args.warmup):
        step()
    times = []
    loop_started = time.perf_counter()
    while len(times) < args.min_runs or time.perf_counter() - loop_started < args.min_seconds:
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000.0)
    loop_s = time.perf_counter() - loop_started

    payload = statistics(times)
    payload.update(
        ok=True,
        warmup=args.warmup,
        threads=threads,
        graph_optimization=args.graph_optimization,
        session_ms=session_ms,
        loop_s=loop_s,
        boot_id=boot_id,
        facts=facts(None, ort_version=ort.__version__, numpy_version=np.__version__),
    )
    if codec is not None:
        payload["codec"] = codec
    return payload


def timed_step(args, session, feeds):
    """What one timed run does: the model alone, or with the link's encoding after it or decoding before it."""
    if not (args.encode_bits or args.decode_bits):
        return (lambda: session.run(None, feeds)), None
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import tensor_codec
    except ImportError as exc:
        raise Failure("codec", "tensor_codec.py must be next to %s: %s" % (os.path.basename(__file__), exc))
    if args.encode_bits:
        names = [output.name for output in session.get_outputs()]
        frame = tensor_codec.encode_frame(dict(zip(names, session.run(None, feeds))), args.encode_bits)

        def step():
            tensor_codec.encode_frame(dict(zip(names, session.run(None, feeds))), args.encode_bits)

        return step, {"step": "encode", "bits": args.encode_bits, "frame_bytes": len(frame)}
    frame = tensor_codec.encode_frame(feeds, args.decode_bits)

    def step():
        session.run(None, tensor_codec.decode_frame(frame))

    return step, {"step": "decode", "bits": args.decode_bits, "frame_bytes": len(frame)}


def random_inputs(session, np):
    rng = np.random.RandomState(0)
    feeds = {}
    for item in session.get_inputs():
        shape = []
        for axis, dim in enumerate(item.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            else:
                raise Failure(
                    "model",
                    "input %r has a free dimension %r at axis %d; export the model with a fixed input shape"
                    % (item.name, dim, axis),
                )
        dtype = NUMPY_TYPES.get(item.type)
        if dtype is None:
            raise Failure("model", "input %r has type %s, which this script cannot fill" % (item.name, item.type))
        if dtype.startswith("float"):
            feeds[item.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[item.name] = rng.randint(0, 2, size=shape).astype(dtype)
    return feeds


def statistics(times):
    ordered = sorted(times)
    count = len(ordered)
    mean = sum(ordered) / count
    variance = sum((t - mean) ** 2 for t in ordered) / (count - 1) if count > 1 else 0.0
    return {
        "runs": count,
        "median_ms": percentile(ordered, 50),
        "mean_ms": mean,
        "p90_ms": percentile(ordered, 90),
        "std_ms": math.sqrt(variance),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }


def percentile(ordered, q):
    """Linear interpolation between the closest ranks (numpy's default method)."""
    position = (len(ordered) - 1) * q / 100.0
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def facts(disk_path, ort_version=None, numpy_version=None):
    """What the latency depends on: CPU, cores, versions, governor, temperature, throttling, load."""
    result = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "board": read_text("/proc/device-tree/model") or read_text("/sys/firmware/devicetree/base/model"),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "python": sys.executable,
        "python_version": platform.python_version(),
        "numpy_version": numpy_version,
        "onnxruntime_version": ort_version,
        "governor": read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "temperature_c": temperature(),
        "throttled": throttled(),
        "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "boot_id": read_text("/proc/sys/kernel/random/boot_id"),
    }
    if disk_path is not None:
        result.update(disk_facts(disk_path))
        result.update(python_facts())
    return result


def disk_facts(path):
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = None
    return {
        "disk_path": path,
        "free_disk_mb": None if free is None else free / (1024.0 * 1024.0),
        "tools": {name: shutil.which(name) is not None for name in ("timeout", "sha256sum", "mktemp")},
    }


def python_facts():
    """Versions of numpy and onnxruntime, or which are missing, and how pip may install them."""
    result = {
        "in_venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        "externally_managed": externally_managed(),
        "missing": [],
    }
    for name in ("numpy", "onnxruntime"):
        try:
            module = __import__(name)
            result[name + "_version"] = getattr(module, "__version__", "unknown")
        except ImportError:
            result["missing"].append(name)
    return result


def externally_managed():
    """PEP 668: pip refuses to install into this interpreter (Debian 12, Raspberry Pi OS Bookworm)."""
    import sysconfig

    return os.path.isfile(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED"))


def usable_cores():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model():
    text = read_text("/proc/cpuinfo", strip=False) or ""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Processor", "cpu model"):
        if fields.get(key):
            return fields[key]
    part = fields.get("CPU part", "").lower()
    if part in ARM_CORES:
        return "ARM " + ARM_CORES[part]
    return platform.processor() or platform.machine() or "unknown"


def temperature():
    raw = read_text("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(raw) / 1000.0
    except (TypeError, ValueError):
        return None


def throttled():
    """Raspberry Pi firmware's throttling flags (``0x0`` = never throttled since boot), or None elsewhere."""
    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "get_throttled"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    text = out.stdout.decode("ascii", "replace").strip()
    return text.partition("=")[2] or None


def read_text(path, strip=True):
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace").replace("\x00", "")
    except OSError:
        return None
    return text.strip() if strip else text


if __name__ == "__main__":
    sys.exit(main())
