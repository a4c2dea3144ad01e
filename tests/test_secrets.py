"""No password ever reaches a message, a log, study.json or a trial's record: one mask, odd URLs, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from optiseg import records
from optiseg.cli import main
from optiseg.errors import StudyError
from optiseg.search.storage import open_storage, parse_storage
from optiseg.secrets import has_password, mask_credentials, remember_secret
from postgres import postgres_url  # noqa: F401  (fixture)

DATA = "data: {root: data, synthetic: {n: 12, width: 96, height: 64}}\n"

# (URL, its password): empty user, '@', ':' and '/' in the password, percent-encoding, a query, spaces and quotes.
ODD_URLS = [
    ("postgresql://:pw@host/db", "pw"),
    ("postgresql://user:p@ss@host/db", "p@ss"),
    ("postgresql://user:p@ss:w/rd@host:5432/db", "p@ss:w/rd"),
    ("postgresql://user:s%40cr%2Fet@host/db?sslmode=require", "s%40cr%2Fet"),
    ("mysql+pymysql://me:hunter2@dbhost.example/optiseg", "hunter2"),
    ("postgresql://user@host/db?sslmode=require&password=qwerty", "qwerty"),
    ("postgresql://user:my secret@host/db", "my secret"),
    ("postgresql://user:it's\"quoted@host/db", "it's\"quoted"),
]


@pytest.mark.parametrize("url,password", ODD_URLS)
def test_the_mask_hides_the_password_of_an_odd_url(url, password):
    masked = mask_credentials(url, url=True)
    assert password not in masked and "***" in masked and "host" in masked
    assert has_password(url)


@pytest.mark.parametrize("url,password", [(u, p) for u, p in ODD_URLS if " " not in p and "'" not in p])
def test_the_mask_hides_passwords_inside_a_text(url, password):
    text = f"(psycopg.OperationalError) cannot connect to {url!r}: refused; retried {url}. See also 'x@y'"
    assert password not in mask_credentials(text)


def test_several_urls_and_dsn_pairs_in_one_text():
    text = "a=postgresql://u:one1@h1/db,b=mysql://:two2@h2/db host=h3 user=u password=three3 PWD='four 4'"
    masked = mask_credentials(text)
    for secret in ("one1", "two2", "three3", "four 4"):
        assert secret not in masked
    assert "h2/db" in masked and "host=h3 user=u" in masked


def test_environment_references_are_kept_and_are_not_passwords():
    for url in ("postgresql://u:${OPTISEG_PW}@h/db", "postgresql://u@h/db?password=${OPTISEG_PW}"):
        assert mask_credentials(url, url=True) == url and mask_credentials(url) == url
        assert not has_password(url)
    assert mask_credentials("postgresql://u@h/db") == "postgresql://u@h/db"  # nothing to hide, nothing changed


def test_a_remembered_secret_is_masked_anywhere_in_any_form():
    remember_secret("t0p s3cret/x")
    masked = mask_credentials("auth failed for 't0p s3cret/x' (t0p%20s3cret%2Fx)")
    assert "s3cret" not in masked


def test_refusals_never_print_the_password(tmp_path):
    for url, password in ODD_URLS:
        with pytest.raises(Exception) as refused:
            parse_storage(url, tmp_path, tmp_path)
        assert password not in str(refused.value), url
        assert refused.value.exit_code == 2


def test_a_driver_error_that_quotes_the_expanded_password_is_masked(monkeypatch, tmp_path):
    """Drivers may echo the DSN they were given; what the environment put into the URL never comes out."""
    monkeypatch.setenv("OPTISEG_TEST_SECRET", "Xy@9:zz/w")
    spec = parse_storage("postgresql://u:${OPTISEG_TEST_SECRET}@127.0.0.1:1/optiseg", tmp_path, tmp_path)

    def refuse(url, **_):
        raise RuntimeError(f"cannot use {url} (dsn: host=127.0.0.1 password=Xy@9:zz/w), password 'Xy@9:zz/w' rejected")

    monkeypatch.setattr(optuna.storages, "RDBStorage", refuse)
    monkeypatch.setattr("optiseg.search.storage.time.sleep", lambda _: None)
    with pytest.raises(StudyError) as failed:
        open_storage(spec)
    assert "Xy@9" not in str(failed.value) and "zz/w" not in str(failed.value)
    assert "${OPTISEG_TEST_SECRET}" in str(failed.value)  # says where the secret comes from


def test_a_trial_error_is_recorded_masked():
    study = optuna.create_study()
    trial = study.ask()
    records.record_failure(trial, "lost postgresql://u:hunter22@db/x mid-trial", retryable=True)
    assert "hunter22" not in records.error_of(study.trials[0])


@pytest.mark.parametrize("url,password", ODD_URLS)
def test_the_cli_never_prints_a_password(tmp_path, capsys, url, password):
    config = tmp_path / "study.yaml"
    config.write_text(DATA + f"storage: {json.dumps(url)}\n")
    code = main(["search", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and "holds a password" in err and f"{config}: storage = " in err
    assert password not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before anything was made


def test_an_unexpected_error_traceback_is_masked(tmp_path, capsys, monkeypatch):
    def crash(*_args, **_kwargs):
        raise RuntimeError("driver said: postgresql://u:crashpw1@h/db is gone")

    monkeypatch.setattr("optiseg.search.run_search", crash)
    config = tmp_path / "study.yaml"
    config.write_text(DATA)
    code = main(["search", str(config)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "RuntimeError" in err and "crashpw1" not in err


@pytest.mark.slow
def test_a_search_on_a_server_writes_no_password_anywhere(tmp_path, capsys, monkeypatch, postgres_url):
    """A real search on PostgreSQL with the password from the environment: stdout, stderr and every file of
    the study folder (study.json, config.yaml, search.log, ...) are free of it."""
    from optiseg.config import DataConfig
    from optiseg.data import load_dataset

    secret = "Sup3r:s3cr@t/pw"
    monkeypatch.setenv("OPTISEG_TEST_DB_PASSWORD", secret)
    data_root = tmp_path / "data"
    load_dataset(DataConfig(root=data_root, synthetic={"n": 12, "width": 96, "height": 64}))
    user_at_host = postgres_url.split("://", 1)[1]
    user, host = user_at_host.split("@", 1)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "study": "secret-free",
        "resolution": 64,
        "search_space": {"resolution": [64], "a": [0.25]},
        "data": {"root": str(data_root)},
        "training": {"epochs": 1, "batch_size": 4},
        "device": {"kind": "local", "measure": {"threads": 1, "warmup": 1, "min_runs": 3, "min_seconds": 0}},
        "budget": {"n_trials": 1},
        "storage": f"postgresql://{user}:${{OPTISEG_TEST_DB_PASSWORD}}@{host}",
        "output": str(tmp_path / "runs"),
    }))
    code = main(["search", str(config), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert main(["front", str(tmp_path / "runs" / "secret-free"), "--all", "--json"]) == 0
    front_out, front_err = capsys.readouterr()
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "study.json" for p in files)
    study_json = json.loads(next(p for p in files if p.name == "study.json").read_text())
    assert "${OPTISEG_TEST_DB_PASSWORD}" in study_json["storage"]
    for part in ("Sup3r", "s3cr@t"):
        for text in (out, err, front_out, front_err):
            assert part not in text
        for path in files:
            assert part.encode() not in Path(path).read_bytes(), path
