"""Settings: CANDLEWIRE_* variables, flags over variables, and validation messages.

conftest removes every CANDLEWIRE_ variable at import; each test sets its own
with monkeypatch.
"""

from __future__ import annotations

import argparse

import pytest

from candlewire.config import Settings, add_arguments, describe_settings, load, parse_listen
from candlewire.domain import Interval
from candlewire.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def config_error(args: argparse.Namespace | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(args)
    return str(info.value)


def named(message: str, setting: str) -> bool:
    """Whether a ConfigError message names ``setting`` with its flag and variable."""
    flag = "--" + setting.replace("_", "-")
    return f"{setting} ({flag} / CANDLEWIRE_{setting.upper()}):" in message


# --------------------------------------------------------------------------
# Defaults and environment
# --------------------------------------------------------------------------


def test_defaults_are_the_embedded_mode() -> None:
    settings = load()

    assert settings.grpc_listen == "0.0.0.0:50051"
    assert settings.feed == "sim"
    assert settings.symbols == ("BTCUSDT", "ETHUSDT", "EURUSD")
    assert settings.intervals == tuple(Interval)
    assert settings.retention == 5000
    assert settings.stale_after == 10.0
    assert settings.feed_stale_after == 15.0
    assert settings.log_level == "INFO"


def test_env_lists_are_comma_separated_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_SYMBOLS", " BTCUSDT, ETHUSDT ,SOLUSDT,, ")
    monkeypatch.setenv("CANDLEWIRE_INTERVALS", "1h, 1m,1d")

    settings = load()

    assert settings.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert settings.intervals == (Interval.M1, Interval.H1, Interval.D1)  # sorted


def test_env_intervals_tell_minutes_from_months(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_INTERVALS", "1M,1m,1mo,1s,1S,INTERVAL_1W,1w")

    settings = load()

    assert settings.intervals == (Interval.S1, Interval.M1, Interval.W1, Interval.MO1)


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("CANDLEWIRE_GRPC_LISTEN", "[::]:6000", "grpc_listen", "[::]:6000"),
        ("CANDLEWIRE_RETENTION", "300", "retention", 300),
        ("CANDLEWIRE_LATENESS", "0.5", "lateness", 0.5),
        ("CANDLEWIRE_STALE_AFTER", "3", "stale_after", 3.0),
        ("CANDLEWIRE_FEED_STALE_AFTER", "2.5", "feed_stale_after", 2.5),
        ("CANDLEWIRE_HEARTBEAT_INTERVAL", "0.25", "heartbeat_interval", 0.25),
        ("CANDLEWIRE_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        ("CANDLEWIRE_SIM_SEED", "42", "sim_seed", 42),
        ("CANDLEWIRE_SIM_HISTORY", "0", "sim_history", 0),
        ("CANDLEWIRE_SHUTDOWN_GRACE", "0", "shutdown_grace", 0.0),
    ],
)
def test_env_sets_each_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, setting: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load(), setting) == expected


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(ValueError, match="frozen"):
        settings.retention = 1  # type: ignore[misc]


# --------------------------------------------------------------------------
# Flags
# --------------------------------------------------------------------------


def test_every_setting_has_a_flag_mentioning_its_variable() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = parser.format_help()
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert f"CANDLEWIRE_{name.upper()}" in help_text


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_RETENTION", "300")
    monkeypatch.setenv("CANDLEWIRE_SYMBOLS", "BTCUSDT,ETHUSDT")
    monkeypatch.setenv("CANDLEWIRE_INTERVALS", "1m")
    monkeypatch.setenv("CANDLEWIRE_GRPC_LISTEN", "127.0.0.1:7000")

    settings = load(
        parse("--retention", "400", "--symbols", "SOLUSDT, EURUSD", "--intervals", "1h")
    )

    assert settings.retention == 400
    assert settings.symbols == ("SOLUSDT", "EURUSD")
    assert settings.intervals == (Interval.H1,)
    # Flags left out fall back to the environment, then to the defaults.
    assert settings.grpc_listen == "127.0.0.1:7000"
    assert settings.lateness == 2.0


def test_flags_without_env() -> None:
    settings = load(parse("--grpc-listen", "127.0.0.1:0", "--stale-after", "1.5"))
    assert settings.grpc_listen == "127.0.0.1:0"
    assert settings.stale_after == 1.5
    assert parse_listen(settings.grpc_listen) == ("127.0.0.1", 0)


def test_keyword_overrides_win_over_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_RETENTION", "300")
    assert load(parse("--retention", "400"), retention=500).retention == 500


def test_an_invalid_env_value_is_not_rescued_by_a_valid_flag_of_another_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CANDLEWIRE_RETENTION", "5")
    message = config_error(parse("--lateness", "1"))
    assert named(message, "retention")


def test_a_valid_flag_rescues_an_invalid_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_RETENTION", "5")
    assert load(parse("--retention", "100")).retention == 100


def test_describe_settings_lists_every_setting() -> None:
    lines = describe_settings(load(symbols="BTCUSDT,EURUSD", intervals="1m,1M"))
    assert len(lines) == len(Settings.model_fields)
    assert "symbols=BTCUSDT,EURUSD" in lines
    assert "intervals=1m,1M" in lines


# --------------------------------------------------------------------------
# Validation: each error names the setting, its flag and its variable
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("grpc_listen", "localhost"),
        ("grpc_listen", "localhost:http"),
        ("grpc_listen", "localhost:65536"),
        ("grpc_listen", ":50051"),
        ("feed", "carrier-pigeon"),
        ("symbols", ""),
        ("symbols", " , "),
        ("symbols", "BTCUSDT,BTCUSDT"),
        ("symbols", "BTC/USDT"),
        ("symbols", "X" * 33),
        ("intervals", "7m"),
        ("intervals", ""),
        ("intervals", "1m,,fortnight"),
        ("log_level", "TRACE"),
        ("retention", "5"),
        ("retention", "99"),
        ("retention", "1000001"),
        ("retention", "many"),
        ("update_log_size", "15"),
        ("lateness", "-1"),
        ("lateness", "3601"),
        ("heartbeat_interval", "0"),
        ("heartbeat_interval", "301"),
        ("subscriber_queue_size", "7"),
        ("max_streams", "0"),
        ("stale_after", "0"),
        ("feed_stale_after", "-1"),
        ("shutdown_grace", "-0.1"),
        ("shutdown_grace", "301"),
        ("sim_rate", "0"),
        ("sim_rate", "10001"),
        ("sim_seed", "1.5"),
        ("sim_history", "-1"),
        ("sim_history", "100001"),
        ("redis_prefix", "cw{x}:"),
        ("redis_prefix", "cw x:"),
        ("ingest_shard", "{a}"),
        ("ingest_shard", "a b"),
    ],
)
def test_invalid_env_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(f"CANDLEWIRE_{setting.upper()}", value)

    message = config_error()

    assert message.startswith("invalid settings:")
    assert named(message, setting), message
    assert message.count("CANDLEWIRE_") == 1, message  # only the bad setting


@pytest.mark.parametrize(
    ("flag", "value", "setting"),
    [
        ("--retention", "5", "retention"),
        ("--intervals", "2m", "intervals"),
        ("--symbols", "", "symbols"),
        ("--grpc-listen", "nowhere", "grpc_listen"),
        ("--log-level", "LOUD", "log_level"),
        ("--heartbeat-interval", "never", "heartbeat_interval"),
    ],
)
def test_invalid_flag_value_names_the_setting(flag: str, value: str, setting: str) -> None:
    message = config_error(parse(flag, value))
    assert named(message, setting), message


def test_every_invalid_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_RETENTION", "5")
    monkeypatch.setenv("CANDLEWIRE_LOG_LEVEL", "LOUD")

    message = config_error(parse("--intervals", "9x"))

    assert named(message, "retention")
    assert named(message, "log_level")
    assert named(message, "intervals")
    assert len(message.splitlines()) == 4


def test_the_message_says_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEWIRE_INTERVALS", "1m,7m")
    assert "'7m'" in config_error()
    monkeypatch.delenv("CANDLEWIRE_INTERVALS")
    monkeypatch.setenv("CANDLEWIRE_SYMBOLS", "BTCUSDT,ETHUSDT,BTCUSDT")
    assert "distinct" in config_error()
    monkeypatch.setenv("CANDLEWIRE_SYMBOLS", "BTC USDT")
    assert "'BTC USDT'" in config_error()
    monkeypatch.delenv("CANDLEWIRE_SYMBOLS")
    monkeypatch.setenv("CANDLEWIRE_RETENTION", "5")
    assert "greater than or equal to 100" in config_error()


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match="retentoin"):
        load(retentoin=100)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:50051", ("0.0.0.0", 50051)),
        ("[::]:50051", ("::", 50051)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(address: str, expected: tuple[str, int]) -> None:
    assert parse_listen(address) == expected
    assert load(grpc_listen=address).grpc_listen == address


@pytest.mark.parametrize(
    "url", ["redis+cluster://node-1:7000", "rediss+cluster://user:pw@node-1:7000/0"]
)
def test_a_cluster_url_is_accepted(url: str) -> None:
    assert load(parse("--redis-url", url)).redis_url == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://node-1:7000", "redis+cluster://"),
        ("redis+cluster://node-1:7000/2", "database"),
        ("redis+cluster:///0", "one node"),
    ],
)
def test_bad_redis_urls_are_refused_clearly(url: str, says: str) -> None:
    message = config_error(parse("--redis-url", url))
    assert named(message, "redis_url") and says in message
