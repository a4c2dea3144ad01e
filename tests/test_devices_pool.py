"""DevicePool: one measurement per device at a time, across threads and across processes.

The runners are stand-ins that record how many measurements overlap on them; the
pool's logic does not depend on what a runner does (test_devices_ssh.py measures
through a pool of real SSH devices).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from optiseg.devices import DeviceLock, DevicePool
from optiseg.errors import DeviceError, UsageError


class RecordingRunner:
    def __init__(self, name: str, seconds: float = 0.05):
        self.device_key = self.label = name
        self.seconds = seconds
        self.active = 0
        self.most_at_once = 0
        self.measured = 0
        self.closed = False
        self._lock = threading.Lock()

    def measure(self, onnx_path):
        with self._lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        time.sleep(self.seconds)
        with self._lock:
            self.active -= 1
            self.measured += 1
        return self.device_key

    def close(self):
        self.closed = True


def pool_of(names, tmp_path, seconds=0.05):
    runners = [RecordingRunner(name, seconds) for name in names]
    return DevicePool([(name, r) for name, r in zip(names, runners)], device_key="pool", label="test", lock_dir=tmp_path), runners


def test_each_device_measures_one_model_at_a_time_and_all_devices_work(tmp_path):
    pool, runners = pool_of(["a", "b", "c"], tmp_path)

    def work():
        for _ in range(4):
            with pool.acquire() as runner:
                runner.measure("model.onnx")

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r.measured for r in runners) == 24
    assert all(r.most_at_once == 1 for r in runners)
    assert all(r.measured >= 1 for r in runners)
    pool.close()
    assert all(r.closed for r in runners)
    with pytest.raises(UsageError, match="closed"):
        with pool.acquire():
            pass


def test_the_least_recently_used_free_device_comes_first(tmp_path):
    pool, _ = pool_of(["a", "b"], tmp_path, seconds=0)
    order = []
    for _ in range(4):
        with pool.acquire() as runner:
            order.append(runner.label)
    assert order == ["a", "b", "a", "b"]


def test_a_device_held_by_another_process_is_skipped_then_waited_for(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from optiseg.devices import DeviceLock\n"
            "lock = DeviceLock('a', Path(sys.argv[1])); assert lock.try_acquire()\n"
            "print('held', flush=True); time.sleep(float(sys.argv[2]))",
            str(tmp_path),
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        pool, _ = pool_of(["a", "b"], tmp_path, seconds=0)
        with pool.acquire() as runner:
            assert runner.label == "b"
            with pytest.raises(DeviceError, match="no device of test became free within 0.3 s"):
                with pool.acquire(timeout=0.3):
                    pass
            started = time.monotonic()
            with pool.acquire(timeout=30) as other:  # the other process exits and its lock goes with it
                assert other.label == "a"
            assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


def test_a_device_lock_is_exclusive_and_released(tmp_path):
    first, second = DeviceLock("ssh-10.0.0.7-22", tmp_path), DeviceLock("ssh-10.0.0.7-22", tmp_path)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    assert first.path.name == "ssh-10.0.0.7-22.lock"
