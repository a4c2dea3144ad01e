"""The `device:` section, device names on the command line, and ~/.ssh/config resolution."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
import yaml

from optiseg.config.device import DeviceConfig, load_device_config, parse_device_config
from optiseg.devices import make_runner, open_pool
from optiseg.devices.target import format_device_name, parse_device_name, resolve_target
from optiseg.errors import ConfigError, UsageError

REPO = Path(__file__).resolve().parents[1]


def parse(raw) -> DeviceConfig:
    return parse_device_config(raw, "test.yaml", Path("/base"))


def test_kind_follows_host_or_pool_unless_given():
    assert parse(None).kind == "local"
    assert parse({"host": "pi"}).kind == "ssh"
    assert parse({"pool": [{"host": "a"}, {"host": "b"}]}).kind == "ssh"
    assert parse({"kind": "ssh", "host": "pi"}).label == "pi"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "local", "host": "pi"}, "host only apply to kind: ssh"),
        ({"kind": "ssh"}, "kind: ssh needs host"),
        ({"host": "a", "pool": [{"host": "b"}]}, "not both"),
        ({"host": "pi", "prot": 22}, "unknown key 'device.prot' (did you mean 'port'?)"),
        ({"host": "pi", "port": 70000}, "device.port = 70000"),
        ({"measure": {"graph_optimization": "max"}}, "device.measure.graph_optimization"),
        ({"measure": {"min_runs": 0}}, "device.measure.min_runs"),
    ],
)
def test_mistakes_are_one_line_errors_naming_file_and_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    assert str(caught.value).startswith("test.yaml: ") and message in str(caught.value)


def test_relative_paths_are_taken_from_the_config_folder():
    config = parse({"host": "pi", "key_file": "keys/pi", "known_hosts": "/abs/known_hosts"})
    assert config.key_file == Path("/base/keys/pi") and config.known_hosts == Path("/abs/known_hosts")


def test_pool_members_inherit_the_section_settings():
    config = parse(
        {
            "user": "pi",
            "port": 2222,
            "python": "~/venv/bin/python",
            "measure": {"threads": 4},
            "pool": [{"host": "pi-1"}, {"host": "pi-2", "user": "admin", "port": 22, "name": "second"}],
        }
    )
    first, second = config.members()
    assert (first.host, first.user, first.port, first.name) == ("pi-1", "pi", 2222, "pi-1")
    assert (second.host, second.user, second.port, second.label) == ("pi-2", "admin", 22, "second")
    assert all(m.python == "~/venv/bin/python" and m.measure.threads == 4 and not m.pool for m in (first, second))
    assert parse({"host": "pi"}).members() == (parse({"host": "pi"}),)


def test_a_device_only_file_and_a_full_study_file_both_load(tmp_path):
    device_only = tmp_path / "pi.yaml"
    device_only.write_text(yaml.safe_dump({"device": {"host": "raspberrypi.local", "user": "pi", "key_file": "k"}}))
    config = load_device_config(device_only)
    assert config.host == "raspberrypi.local" and config.key_file == tmp_path / "k"

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"data": {"root": "data"}, "budget": {"n_trials": 3}, "device": {"kind": "local"}}))
    assert load_device_config(study).kind == "local"

    (tmp_path / "study_without_device.yaml").write_text(yaml.safe_dump({"data": {"root": "x"}}))
    assert load_device_config(tmp_path / "study_without_device.yaml") == DeviceConfig()
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"devcie": {"host": "pi"}}))
    with pytest.raises(ConfigError, match="has no device: section"):
        load_device_config(tmp_path / "other.yaml")
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"device": {"hots": "pi"}}))
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'device.hots' \(did you mean 'host'\?\)"):
        load_device_config(tmp_path / "typo.yaml")


@pytest.mark.parametrize("name", ["local.yaml", "raspberry-pi-4.yaml"])
def test_the_examples_are_valid(name):
    config = load_device_config(REPO / "examples" / "devices" / name)
    if name.startswith("raspberry"):
        assert config.kind == "ssh" and config.measure.threads == 4 and config.user == "pi"
    else:
        assert config.kind == "local"


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("local", {"kind": "local"}),
        ("raspberrypi.local", {"kind": "ssh", "host": "raspberrypi.local"}),
        ("pi@10.0.0.7:2222", {"kind": "ssh", "host": "10.0.0.7", "user": "pi", "port": 2222}),
        ("[fe80::1]:2200", {"kind": "ssh", "host": "fe80::1", "port": 2200}),
        ("me@[::1]", {"kind": "ssh", "host": "::1", "user": "me"}),
        ("fe80::1", {"kind": "ssh", "host": "fe80::1"}),
    ],
)
def test_device_names(text, section):
    assert parse_device_name(text) == section
    if section.get("host"):
        again = format_device_name(section["host"], section.get("port"), section.get("user"))
        assert parse_device_name(again) == section


@pytest.mark.parametrize("text", ["pi@", "@host", "host:0", "host:ssh", "[::1"])
def test_bad_device_names(text):
    with pytest.raises(UsageError):
        parse_device_name(text)


def test_ssh_config_supplies_what_the_yaml_leaves_out(tmp_path):
    ssh_config = tmp_path / "config"
    ssh_config.write_text(
        "Host mypi\n  HostName 10.1.2.3\n  Port 2200\n  User admin\n  IdentityFile ~/.ssh/pi_key\n"
        "  UserKnownHostsFile ~/pi_known_hosts\n  ProxyCommand nc -x proxy:1080 %h %p\n"
        "Host jumpy\n  ProxyJump bastion\n"
    )
    target = resolve_target(parse({"host": "mypi", "ssh_config": str(ssh_config)}))
    assert (target.hostname, target.port, target.user) == ("10.1.2.3", 2200, "admin")
    assert target.identity_files == (Path("~/.ssh/pi_key").expanduser(),)
    assert target.known_hosts[0] == Path("~/pi_known_hosts").expanduser()
    assert target.proxy_command == "nc -x proxy:1080 10.1.2.3 2200"
    assert target.where == "admin@10.1.2.3:2200 (mypi)"

    overridden = resolve_target(parse({"host": "mypi", "port": 22, "user": "pi", "ssh_config": str(ssh_config)}))
    assert (overridden.port, overridden.user) == (22, "pi")

    with pytest.raises(ConfigError, match="ProxyCommand ssh -W %h:%p bastion"):
        resolve_target(parse({"host": "jumpy", "ssh_config": str(ssh_config)}))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_target(parse({"host": "mypi", "ssh_config": str(tmp_path / "absent")}))


def test_defaults_without_an_ssh_config(tmp_path):
    target = resolve_target(parse({"host": "pi.lan", "ssh_config": str(_empty(tmp_path))}))
    assert (target.hostname, target.port, target.user) == ("pi.lan", 22, getpass.getuser())
    assert target.known_hosts == (Path("~/.ssh/known_hosts").expanduser(), Path("/etc/ssh/ssh_known_hosts"))


def test_the_trust_command_names_the_files_the_runner_reads(tmp_path):
    config = parse({"host": "10.0.0.7", "port": 2222, "known_hosts": str(tmp_path / "kh"), "ssh_config": str(_empty(tmp_path))})
    target = resolve_target(config)
    assert target.trust_command == (
        f"optiseg device trust 10.0.0.7:2222 --known-hosts {tmp_path / 'kh'} --ssh-config {tmp_path / 'empty'}"
    )
    default = resolve_target(parse({"host": "pi.lan", "ssh_config": str(_empty(tmp_path))}))
    assert default.trust_command.startswith("optiseg device trust pi.lan --ssh-config")


def test_make_runner_and_open_pool_pick_the_right_runners(tmp_path):
    ssh_config = str(_empty(tmp_path))
    pool_config = parse({"user": "pi", "ssh_config": ssh_config, "pool": [{"host": "a"}, {"host": "b"}], "measure": {"threads": 4}})
    with pytest.raises(UsageError, match="open_pool"):
        make_runner(pool_config)
    with open_pool(pool_config, lock_dir=tmp_path) as pool:
        assert pool.size == 2 and pool.device_key == "pool:a+b:threads=4"
        assert [r.device_key for r in pool.runners] == ["ssh:pi@a:22:threads=4", "ssh:pi@b:22:threads=4"]
    with open_pool(parse(None), lock_dir=tmp_path) as pool:
        assert pool.size == 1 and pool.device_key == pool.runners[0].device_key


def _empty(folder: Path) -> Path:
    path = folder / "empty"
    path.write_text("")
    return path
