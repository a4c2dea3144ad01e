"""Storage settings, the single-writer SQLite lock, and recovery of trials whose worker died."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optiseg.errors import ConfigError, StudyError
from optiseg import records
from optiseg.search.lease import LeaseSettings, TrialLease, recover_stale_trials
from optiseg.search.storage import SQLiteWriterLock, open_storage, parse_storage
from optiseg.secrets import mask_credentials


def test_default_is_sqlite_in_the_study_folder(tmp_path):
    spec = parse_storage(None, tmp_path / "runs" / "s", tmp_path)
    assert spec.kind == "sqlite" and spec.path == tmp_path / "runs" / "s" / "optuna.db" and not spec.shared


def test_relative_paths_come_from_the_config_folder(tmp_path):
    assert parse_storage("sqlite:///db/x.db", tmp_path / "out", tmp_path).path == (tmp_path / "db" / "x.db").resolve()
    journal = parse_storage("journal:shared/s.journal", tmp_path / "out", tmp_path)
    assert journal.kind == "journal" and journal.shared and journal.path == (tmp_path / "shared" / "s.journal").resolve()


def test_passwords_are_refused_and_env_references_allowed(monkeypatch):
    with pytest.raises(ConfigError, match="holds a password"):
        parse_storage("postgresql://u:secret@db/optiseg", Path("."), Path("."))
    spec = parse_storage("postgresql://u:${OPTISEG_TEST_PW}@127.0.0.1:1/optiseg", Path("."), Path("."))
    assert spec.kind == "server" and "secret" not in spec.shown
    monkeypatch.delenv("OPTISEG_TEST_PW", raising=False)
    with pytest.raises(ConfigError, match="OPTISEG_TEST_PW"):
        open_storage(spec)
    assert mask_credentials("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


@pytest.mark.parametrize("bad", ["redis://x", "sqlite://", "sqlite:///:memory:", "study.db"])
def test_unusable_storage_settings(bad):
    with pytest.raises(ConfigError):  # bad input: exit status 2
        parse_storage(bad, Path("."), Path("."))


def test_second_sqlite_writer_is_refused(tmp_path):
    db = tmp_path / "optuna.db"
    with SQLiteWriterLock(db):
        with pytest.raises(StudyError) as info:
            with SQLiteWriterLock(db):
                pass
        message = str(info.value)
        assert "SQLite cannot be shared" in message and "postgresql://" in message and "journal:" in message
    with SQLiteWriterLock(db):  # released
        pass


def _running_trial(study, params):
    study.enqueue_trial(params)
    return study.ask({k: optuna.distributions.CategoricalDistribution([1, 2, 3]) for k in params})


def test_expired_leases_are_failed_and_retried_once(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "s.journal")))
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    alive = _running_trial(study, {"x": 1})
    dead = _running_trial(study, {"x": 2})
    settings = LeaseSettings(renew_every_s=0.1, valid_for_s=0.5)
    with TrialLease(alive, settings):
        records.renew_lease(dead, time.time() - 1)
        time.sleep(0.3)
        assert recover_stale_trials(study, settings=settings) == [dead.number]
        # a second worker racing for the same trial gets nothing
        assert recover_stale_trials(study, settings=settings) == []
        states = {t.number: t.state for t in study.get_trials()}
        assert states[alive.number] == TrialState.RUNNING and states[dead.number] == TrialState.FAIL
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    retry = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2, 3])})
    assert retry.params == {"x": 2} and records.retry_of(retry) == dead.number


def test_exclusive_owner_retries_every_running_trial(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}", directions=["maximize", "minimize"])
    trial = _running_trial(study, {"x": 3})
    assert recover_stale_trials(study, all_running_are_dead=True) == [trial.number]
