"""Settings: one table, every entry documented in the README, predictable precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semcache.config import load_settings, settings_table
from semcache.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_default(value: object) -> str:
    """A default as the README table writes it: auto, empty, or the TOML value in backticks."""
    if value is None:
        return "auto"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`"


def test_readme_table_matches_the_settings_row_for_row() -> None:
    text = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    row = re.compile(r"^\| `([a-z_0-9]+)` \| (.+?) \| `(SEMCACHE_[A-Z_0-9]+)` \| (.+) \|$")
    documented = [m.groups() for m in map(row.match, text.splitlines()) if m]
    # The help cell may mark code with backticks; without them it is the help text exactly.
    readme = [
        (name, default, env, help.replace("`", "")) for name, default, env, help in documented
    ]
    expected = [
        (name, _readme_default(default), f"SEMCACHE_{name.upper()}", help_text)
        for name, default, help_text in settings_table()
    ]
    assert readme == expected


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


def test_unknown_key_in_the_file_or_a_misspelt_flag_names_it(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("port = 9000\nserach_k = 4\n")
    with pytest.raises(ConfigError, match=r"c\.toml: unknown setting 'serach_k'"):
        load_settings(config_file=config, environ={})
    with pytest.raises(ConfigError, match="option: unknown setting 'treshold'"):
        load_settings(environ={}, overrides={"treshold": 0.8})
    with pytest.raises(ConfigError, match="unknown setting 'treshold'"):
        load_settings(environ={}).replace(treshold=0.8)
    # Other SEMCACHE_ variables belong to other tools (the benchmarks' shared data folder).
    assert load_settings(environ={"SEMCACHE_SHARED_DATA": "/data"}).port == 8080


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        *[("true", True), ("On", True), ("1", True), (" yes ", True)],
        *[("false", False), ("OFF", False), ("0", False), ("no", False), ("", False)],
    ],
)
def test_booleans_from_the_environment(raw: str, value: bool) -> None:
    assert load_settings(environ={"SEMCACHE_FORWARD_CLIENT_KEY": raw}).forward_client_key is value


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "truee"])
def test_other_strings_are_not_booleans(raw: str) -> None:
    with pytest.raises(ConfigError, match=f"forward_client_key must be a bool.*got '{raw}'"):
        load_settings(environ={"SEMCACHE_FORWARD_CLIENT_KEY": raw})


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("insecure = 1", "insecure must be a bool"),  # TOML has booleans: 1 is not one
        ("port = 8080.0", "port must be a int, got 8080.0"),
        ("port = true", "port must be a int, got True"),
        ("host = 5", "host must be a str, got 5"),
        ("threshold = nan", "threshold must be a finite number"),
        ("sweep_interval_s = inf", "sweep_interval_s must be a finite number"),
        ('upstream_max_retries = "-1"', "upstream_max_retries must not be negative"),
        ("port = 70000", "port must be between 1 and 65535"),
        ('hit_decision = "exact"', "hit_decision must be verified or cosine"),
        ('log_level = "INFO"', "log_level must be debug, info, warning or error"),
        ("verifier_max_candidates = 0", "verifier_max_candidates must be at least 1"),
    ],
)
def test_file_values_are_typed_and_bounded(tmp_path: Path, line: str, words: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(line + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{config}: {words}")):
        load_settings(config_file=config, environ={})


def test_strings_are_parsed_and_auto_means_none(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('port = "9000"\nthreshold = "auto"\nsweep_interval_s = 5\n')
    s = load_settings(config_file=config, environ={"SEMCACHE_VERIFIER_SCORE_THRESHOLD": ""})
    assert (s.port, s.threshold, s.verifier_score_threshold) == (9000, None, None)
    assert s.sweep_interval_s == 5.0 and isinstance(s.sweep_interval_s, float)
    s = load_settings(environ={"SEMCACHE_THRESHOLD": "0.8"}, overrides={"threshold": "auto"})
    assert s.threshold is None


def test_every_bad_value_of_a_source_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"SEMCACHE_PORT": "eighty", "SEMCACHE_SEARCH_K": "0"})
    assert caught.value.message == (
        "environment: port must be a int, got 'eighty'; search_k must be positive"
    )


def test_rules_between_settings_are_checked_on_the_result(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("default_ttl_s = 3000000\n")  # above the default max_ttl_s, 30 days
    with pytest.raises(ConfigError, match="max_ttl_s must be at least default_ttl_s"):
        load_settings(config_file=config, environ={})
    s = load_settings(config_file=config, environ={"SEMCACHE_MAX_TTL_S": "4000000"})
    assert (s.default_ttl_s, s.max_ttl_s) == (3_000_000, 4_000_000)


def test_config_file_read_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing\.toml"):
        load_settings(config_file=tmp_path / "missing.toml", environ={})
    config = tmp_path / "c.toml"
    config.write_text("port = [\n")
    with pytest.raises(ConfigError, match=r"config file .*c\.toml is not valid TOML"):
        load_settings(config_file=config, environ={})
    config.write_bytes(b"host = '\xff'\n")
    with pytest.raises(ConfigError, match="is not valid TOML: not UTF-8"):
        load_settings(config_file=config, environ={})
