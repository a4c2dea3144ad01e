"""Which trained networks of a study make a cascade, and the runners that time its parts."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UsageError
from ._build import CascadeMember


def study_member(study_folder: Path, record) -> CascadeMember | None:
    """A trial's network as a cascade member, or None when its trained files are not on this machine."""
    from ..layout import StudyLayout

    if record.plan is None or record.artifacts is None or record.plan.mode != "device":
        return None  # the cascade runs the network's FP32 model: its figures are the device plan's
    folder = StudyLayout(study_folder).network_at(record.artifacts)
    if not (folder.trained_onnx.is_file() and folder.best_checkpoint.is_file()):
        return None
    return CascadeMember(network=record.plan.network, onnx=folder.trained_onnx, checkpoint=folder.best_checkpoint,
                         label=f"trial {record.number}")


def pick_pair(records: Iterable, study_folder: Path, study_name: str, *, small: int | None = None, large: int | None = None,
              flags: tuple[str, str] = ("--small", "--large")):
    """The small and the large network's records: the given trials, else the fastest trained front member and the trained
    plan with the best IoU. Only plans of one network deployed whole in FP32 or INT8 qualify (their files exist here)."""
    from ..results import COMPLETE, pareto_front

    records = {r.number: r for r in records}
    trained = {n: r for n, r in records.items() if r.status == COMPLETE and study_member(study_folder, r) is not None}

    def pick(number: int | None, flag: str, default):
        if number is None:
            return default
        if number not in records:
            raise UsageError(f"{flag} {number}: study {study_name!r} has no trial {number}; it has trials 0 to {max(records, default=-1)}")
        if number not in trained:
            what = (f"its plan is {records[number].mode}, not the network deployed whole (mode device)"
                    if records[number].plan is not None and records[number].mode != "device" else
                    f"it has no trained network here ({records[number].status})")
            raise UsageError(f"{flag} {number}: trial {number} cannot be a cascade member: {what}",
                             hint=f"pick a trained device plan from `optiseg front {study_folder} --mode device`")
        return trained[number]

    if not trained:
        raise UsageError(f"study {study_name!r} has no trained network yet", hint="run `optiseg search` on it first")
    front = [r for r in pareto_front(trained.values()) if r.number in trained]
    chosen_small = pick(small, flags[0], min(front or trained.values(), key=lambda r: (r.latency_ms or float("inf"), r.number)))
    chosen_large = pick(large, flags[1], max(trained.values(), key=lambda r: (r.iou or 0.0, -r.number)))
    if chosen_small.network.key == chosen_large.network.key:
        raise UsageError(f"the small and the large network are the same ({chosen_small.network.describe()}, trial {chosen_small.number})",
                         hint=f"name two different trained networks with {flags[0]} N {flags[1]} M (see `optiseg front`)")
    return chosen_small, chosen_large


@contextmanager
def cascade_runners(device_config, server_config) -> Iterator[tuple]:
    """The device's runner and the server's; one machine's lock is taken once when both are the same machine."""
    from ..devices import make_runner, open_pool

    with open_pool(device_config) as device_pool, device_pool.acquire() as device:
        if same_machine(device_config, server_config):
            with make_runner(server_config) as server:
                yield device, server
        else:
            with open_pool(server_config) as server_pool, server_pool.acquire() as server:
                yield device, server


def same_machine(a, b) -> bool:
    if a.pool or b.pool:
        return False
    return (a.kind == b.kind == "local") or (a.kind == b.kind == "ssh" and a.host == b.host and a.port == b.port)
