import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance import config
from appliance.cli import cli
from tests.conftest import run_cli

ROOT = Path(__file__).parents[2]


def test_example_documents_every_key_with_its_default():
    example = config.flatten(tomllib.loads((ROOT / "config.example.toml").read_text()))
    assert set(example) == set(config.KEYS)
    for name, key in config.KEYS.items():
        assert example[name] == key.default, name


def test_defaults_and_overrides(tmp_path):
    (tmp_path / "config.toml").write_text('[server]\nport = 9443\n[engines]\nconcurrency = {nmap = 5}\n')
    cfg = config.load(tmp_path)
    assert cfg["server.port"] == 9443 and cfg["engines.concurrency"] == {"nmap": 5}
    assert cfg["server.host"] == "0.0.0.0" and cfg["queue.max_delay_seconds"] == 0.25


@pytest.mark.parametrize("text, problem", [
    ('[server]\nport = "x"\n', "server.port: must be an integer"),
    ('[server]\nport = 70000\n', "server.port: must be between"),
    ('[server]\ntrusted_proxies = ["nope"]\n', "server.trusted_proxies"),
    ('[server]\nbogus = 1\n', "server.bogus: unknown setting"),
    ('[targets]\ndenylist = ["not a target!"]\n', "targets.denylist"),
    ('[server\n', "not valid TOML"),
])
def test_invalid_config_is_one_line_naming_the_key(tmp_path, problem, text):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(config.ConfigError, match=problem.replace("(", r"\(")):
        config.load(tmp_path)


def test_serve_with_invalid_config_prints_one_line(tmp_path, admin_key, data_dir):
    (data_dir / "config.toml").write_text('[server]\nport = "x"\n')
    result = CliRunner().invoke(cli, ["serve", "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "server.port" in result.output
    assert "Traceback" not in result.output


def test_config_set_and_get(admin_key, data_dir):
    run_cli("config", "set", "server.port", "9444", "--data-dir", str(data_dir))
    assert run_cli("config", "get", "server.port", "--data-dir", str(data_dir)).strip() == "9444"
    run_cli("config", "set", "targets.denylist", '["203.0.113.0/24"]', "--data-dir", str(data_dir))
    assert config.load(data_dir)["targets.denylist"] == ["203.0.113.0/24"]
    bad = CliRunner().invoke(cli, ["config", "set", "server.port", "many", "--data-dir", str(data_dir)])
    assert bad.exit_code == 1 and "not a TOML value" in bad.output
    assert config.load(data_dir)["server.port"] == 9444  # a rejected value changes nothing
