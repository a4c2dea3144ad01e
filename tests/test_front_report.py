"""What `optiseg front --all` reports about every trial, and the commands it prints, read back as a user would.

The study is written through optiseg.records as a search writes its trials (tests/_report_study.py):
complete, too slow, a duplicate, a failure of the plan, a failure of the device, an interrupted trial.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from _report_study import PLANS, Plan, study_folder

from optiseg.cli import main

EXTRA = (
    Plan({"resolution": 96, "a": 0.25, "t": 2}, "failed", error="device unreachable: connection refused", retryable=True),
    Plan({"resolution": 64, "a": 0.25, "t": 6}, "interrupted"),
)
STATUS = {0: "complete", 1: "complete", 2: "complete", 3: "too_slow", 4: "complete", 5: "failed", 6: "complete",
          7: "failed", 8: "failed", 9: "interrupted"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A study folder whose path holds a space, as a user's "My Studies" folder would."""
    return study_folder(tmp_path_factory.mktemp("front") / "my studies", name="demo", plans=PLANS + EXTRA)


def front(capsys, *argv: str) -> str:
    assert main(["front", *argv]) == 0
    return capsys.readouterr().out


def table_rows(text: str) -> dict[int, list[str]]:
    """The cells of each body row of a rich table, by trial number (a cell wrapped over several lines joined again)."""
    rows: dict[int, list[str]] = {}
    number = None
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[0].isdigit():
            number = int(cells[0])
            rows[number] = cells
        elif number is not None:  # the continuation of a wrapped row
            rows[number] = [f"{a} {b}".strip() for a, b in zip(rows[number], cells)]
    return rows


def test_the_table_of_every_trial_shows_its_status_and_cause(folder, capsys):
    rows = table_rows(front(capsys, str(folder), "--all"))
    assert {number: cells[1] for number, cells in rows.items()} == STATUS
    assert "same plan as trial 1" in rows[6][-1]
    assert "training diverged" in rows[7][-1] and "retried" not in rows[7][-1]  # the plan's fault: final
    assert "connection refused (retried on the next run)" in rows[8][-1]
    assert "over max_latency_ms" in rows[3][-1]


def test_the_json_of_every_trial_carries_duplicates_errors_and_whether_they_are_retried(folder, capsys):
    trials = {t["trial"]: t for t in json.loads(front(capsys, str(folder), "--all", "--json"))["trials"]}
    assert {number: t["status"] for number, t in trials.items()} == STATUS
    assert trials[6]["duplicate_of"] == 1 and all(t["duplicate_of"] is None for n, t in trials.items() if n != 6)
    assert trials[7]["error"] == "training diverged" and trials[7]["error_retryable"] is False
    assert trials[8]["error"].startswith("device unreachable") and trials[8]["error_retryable"] is True
    assert trials[0]["error"] is None and trials[0]["error_retryable"] is None  # no error: no verdict either


def test_an_interrupted_trial_is_interrupted_not_failed(folder, capsys):
    trials = {t["trial"]: t for t in json.loads(front(capsys, str(folder), "--all", "--json"))["trials"]}
    assert trials[9]["status"] == "interrupted"
    assert table_rows(front(capsys, str(folder), "--all"))[9][1] == "interrupted"
    csv_rows = front(capsys, str(folder), "--all", "--csv").splitlines()
    assert csv_rows[10].split(",")[:2] == ["9", "interrupted"]


def test_next_hints_quote_a_study_folder_with_a_space(folder, capsys):
    """Each printed command runs as it is, pasted into a shell."""
    from optiseg.results import load_records, pareto_front
    from optiseg.search import open_existing_study
    from optiseg.search.loop import SearchSummary
    from optiseg.cli.search_cmd import _print_summary

    handle = open_existing_study(folder)
    records = load_records(handle.study)
    summary = SearchSummary(study="demo", folder=folder, storage="sqlite", sampler="tpe", stop_reason="budget reached",
                            finished_this_run=1, counts={"complete": 5}, front=pareto_front(records),
                            confirmation={"rounds": 3, "spent_s": 4.0, "plans": [{"latency_revision": {}}]})
    _print_summary(summary)
    out = capsys.readouterr().out
    commands = [part.strip() for line in out.splitlines() if line.startswith("next:")
                for part in line.removeprefix("next:").split("|")]
    commands.append(out.split("intervals and ties: ")[1].splitlines()[0])
    assert len(commands) == 4
    for command in commands:
        words = shlex.split(command)
        assert words[:1] == ["optiseg"] and words[2] == str(folder), command
