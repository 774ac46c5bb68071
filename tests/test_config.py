"""Settings: one table, every entry documented in the README, predictable precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semcache.config import load_settings, settings_table
from semcache.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", README.read_text(), re.MULTILINE))
    names = {name for name, _, _ in settings_table()}
    assert names - documented == set(), "settings missing from the README configuration table"
    assert documented - names == set(), "README documents settings that do not exist"


def test_every_setting_has_help() -> None:
    for name, _, help_text in settings_table():
        assert help_text.endswith("."), name


def test_precedence_file_then_env_then_option(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("threshold = 0.8\nport = 9000\nsearch_k = 4\n")
    s = load_settings(
        config_file=config,
        environ={"SEMCACHE_PORT": "9100", "SEMCACHE_THRESHOLD": "0.85", "OTHER": "x"},
        overrides={"threshold": 0.95},
    )
    assert (s.search_k, s.port, s.threshold) == (4, 9100, 0.95)


def test_bool_and_type_errors() -> None:
    assert load_settings(environ={"SEMCACHE_INSECURE": "yes"}).insecure is True
    with pytest.raises(ConfigError, match="insecure must be a bool"):
        load_settings(environ={"SEMCACHE_INSECURE": "maybe"})
    with pytest.raises(ConfigError, match="default_ttl_s must be positive"):
        load_settings(environ={"SEMCACHE_DEFAULT_TTL_S": "0"})


def test_readme_levers_example_parses(tmp_path: Path) -> None:
    from semcache.levers.config import load_levers

    text = README.read_text().split("# levers.toml  (SEMCACHE_LEVERS_FILE=levers.toml)\n")[1]
    levers = tmp_path / "levers.toml"
    levers.write_text(text.split("```")[0])
    config = load_levers(levers)
    assert config.tiers["free"].max_tokens == 1024
    assert config.routing.fallbacks["gpt-4o"] == ("gpt-4.1", "gpt-4o-mini")


def test_bad_levers_file_is_a_config_error(tmp_path: Path) -> None:
    from semcache.levers.config import load_levers

    levers = tmp_path / "levers.toml"
    levers.write_text("[routng]\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_levers(levers)
    levers.write_text("[rate_limits.free]\nrpm = -1\n")
    with pytest.raises(ConfigError, match="rpm"):
        load_levers(levers)
