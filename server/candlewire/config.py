"""Settings: one typed object read from ``CANDLEWIRE_*`` variables and flags.

Flags (``--grpc-listen`` ...) mirror the variables and win over them. Every
value is validated at start; :func:`load` raises :class:`ConfigError` with a
message naming the setting.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from candlewire.domain import Interval
from candlewire.errors import ConfigError

__all__ = ["Settings", "add_arguments", "describe_settings", "load", "parse_listen"]

_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
_FX_PAIR = re.compile(r"^[A-Z]{3}[/-]?[A-Z]{3}$")


class Settings(BaseSettings):
    """All settings of the service, with their defaults (the embedded mode)."""

    model_config = SettingsConfigDict(
        env_prefix="CANDLEWIRE_", frozen=True, extra="forbid", validate_default=True
    )

    grpc_listen: str = Field("0.0.0.0:50051", description="gRPC listen address host:port")
    http_listen: str = Field(
        "0.0.0.0:8080",
        description="grpc-web gateway and web page listen address host:port (empty: none)",
    )
    http_allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated origins of other sites' pages that may call the API "
        "through the gateway, or * (the gateway's own page needs none)",
    )
    http_max_request_bytes: int = Field(
        65536, ge=1024, le=16 * 1024 * 1024, description="largest grpc-web request message"
    )
    http_idle_timeout: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="seconds an HTTP connection may take over a request's line and headers "
        "before it is closed (one that sends nothing is left to a load balancer's idle timeout)",
    )
    feed: Literal["sim", "binance", "replay", "saxo"] = Field(
        "sim", description="upstream feed: sim, binance, replay or saxo"
    )
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        ("BTCUSDT", "ETHUSDT", "EURUSD"), description="comma-separated symbols"
    )
    intervals: Annotated[tuple[Interval, ...], NoDecode] = Field(
        tuple(Interval), description="comma-separated intervals served (1s,1m,...,1M)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    redis_url: str = Field(
        "",
        description="Redis URL (redis://host:6379/0, or redis+cluster://host:7000 for a Redis "
        "Cluster) of the store (empty: in-memory store)",
    )
    redis_prefix: str = Field(
        "cw:", min_length=1, max_length=64, description="prefix of every Redis key"
    )
    quote_ttl: float = Field(
        30.0, gt=0, le=86_400, description="seconds a quote stays in Redis without an update"
    )
    role: Literal["all", "api", "ingest"] = Field(
        "all",
        description="all: feed and API in one process; api: API only, reading Redis; "
        "ingest: feed into Redis only (api and ingest need a Redis URL)",
    )
    ingest_shard: str = Field(
        "default",
        min_length=1,
        max_length=64,
        description="name of the lease ingestors of the same symbols share in Redis",
    )
    lease_ttl: float = Field(
        5.0, ge=0.5, le=300, description="seconds an ingestion lease lasts without renewal"
    )
    ingest_buffer: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="closed candles kept in memory while the store is unavailable",
    )
    retention: int = Field(5000, ge=100, le=1_000_000, description="candles kept per series")
    candle_cache: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="newest candles per series a serving process keeps in memory for "
        "GetCandles, with a Redis URL (0: none, every GetCandles reads Redis)",
    )
    update_log_size: int = Field(
        4096, ge=16, le=1_000_000, description="updates kept per series for resume tokens"
    )
    postgres_url: str = Field(
        "",
        description="PostgreSQL URL of the history tier (postgresql://user:password@host/db; "
        "empty: no history beyond the hot store's retention)",
    )
    postgres_read_url: str = Field(
        "",
        description="PostgreSQL URL for history reads (a read replica; empty: postgres_url)",
    )
    history_retention: str = Field(
        "1s=7d,trades=30d",
        description="history kept per interval, comma-separated interval=span (7d, 12h, 52w "
        "or forever); intervals not named are kept forever; trades=span is the trades' "
        "(30 days when not named)",
    )
    history_queue: int = Field(
        100_000,
        ge=100,
        le=10_000_000,
        description="closed candles queued for PostgreSQL with the in-memory store "
        "(what does not fit while PostgreSQL is slow or away is counted and dropped)",
    )
    lateness: float = Field(
        2.0, ge=0, le=3600, description="seconds a late trade may still correct a closed candle"
    )
    trade_retention: int = Field(
        100_000, ge=1, le=100_000_000, description="trades kept per symbol (the oldest go first)"
    )
    trade_window: float = Field(
        86_400.0,
        ge=0,
        description="seconds of trades kept per symbol, behind its newest trade (0: no limit)",
    )
    max_future: float = Field(
        5.0,
        ge=0,
        le=86_400,
        description="seconds an event time may be ahead of the service clock before the "
        "input is refused",
    )
    max_jump: float = Field(
        0.2,
        ge=0,
        description="largest move of a trade price from the median of the symbol's recent "
        "trade prices, as a fraction (0.2: 20 percent; 0: no outlier rule)",
    )
    outlier_window: int = Field(
        32, ge=2, le=10_000, description="recent trade prices the outlier rule takes the median of"
    )
    heartbeat_interval: float = Field(
        5.0, gt=0, le=300, description="seconds of stream silence before a heartbeat"
    )
    subscriber_queue_size: int = Field(
        1024, ge=8, le=1_000_000, description="updates queued per subscriber before it is ended"
    )
    max_streams: int = Field(10_000, ge=1, description="concurrent SubscribeCandles streams")
    stream_history_bytes: int = Field(
        256 << 20,
        ge=1,
        description="bytes of history streams may hold before they have sent it, in total",
    )
    stream_history_bytes_per_connection: int = Field(
        64 << 20,
        ge=1,
        description="bytes of history the streams of one connection may hold before sending it",
    )
    stale_after: float = Field(10.0, gt=0, description="seconds after which a quote is stale")
    feed_stale_after: float = Field(
        15.0, gt=0, description="seconds without upstream data before readiness fails"
    )
    shutdown_grace: float = Field(5.0, ge=0, le=300, description="seconds to drain on shutdown")
    sim_rate: float = Field(4.0, gt=0, le=10_000, description="simulated trades/s per symbol")
    sim_seed: int = Field(1, description="random seed of the simulator")
    sim_history: int = Field(
        1440, ge=0, le=100_000, description="minutes of simulated history at start-up"
    )
    binance_rest_url: str = Field(
        "https://api.binance.com", description="Binance REST endpoint (feed binance)"
    )
    binance_ws_url: str = Field(
        "wss://stream.binance.com:9443", description="Binance websocket endpoint (feed binance)"
    )
    binance_history: int = Field(
        1000, ge=1, le=100_000, description="klines per symbol and interval loaded at start-up"
    )
    binance_silence_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds without a message before a connection is dead"
    )
    binance_weight_share: float = Field(
        0.5, gt=0, le=1, description="share of Binance's request-weight limit this process uses"
    )
    binance_connection_lifetime: float = Field(
        84_600.0,
        ge=1,
        le=86_400,
        description="seconds after which a connection is replaced (Binance ends them at 24 h)",
    )
    replay_path: str = Field(
        "", description="data.binance.vision file or directory to replay (feed replay)"
    )
    replay_speed: float = Field(
        1.0, ge=0, le=1_000_000, description="replay speed: 1 real time, 60 faster, 0 at once"
    )
    recent_ticks: int = Field(
        100, ge=1, le=100_000, description="latest quotes kept per symbol for GetRecentTicks"
    )
    saxo_app_key: str = Field("", description="Saxo OpenAPI app key (OAuth client_id; feed saxo)")
    saxo_app_secret: SecretStr = Field(
        SecretStr(""),
        description="Saxo app secret (optional: the login uses PKCE); prefer the environment",
    )
    saxo_env: Literal["sim", "live"] = Field("sim", description="Saxo environment: sim or live")
    saxo_redirect_url: str = Field(
        "",
        description="redirect URL registered for the Saxo app "
        "(empty: http://localhost:<HTTP port>/auth/saxo/callback)",
    )
    saxo_auth_url: str = Field("", description="Saxo authorization server (empty: the env's)")
    saxo_rest_url: str = Field("", description="Saxo OpenAPI gateway (empty: the env's)")
    saxo_streaming_url: str = Field(
        "", description="Saxo streaming base, ws(s)://.../streaming/ws (empty: the env's)"
    )
    saxo_candle_price: Literal["mid", "bid", "ask"] = Field(
        "mid", description="price FX candles are built from: mid, bid or ask"
    )
    saxo_token_file: str = Field(
        "",
        description="file keeping the Saxo tokens without Redis, mode 0600 "
        "(empty: $XDG_STATE_HOME/candlewire/saxo-tokens.json)",
    )
    saxo_login_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        ("127.0.0.0/8", "::1/128"),
        description="comma-separated addresses or networks that may use /auth/saxo/login "
        "and its callback on the HTTP port",
    )

    api_keys_file: str = Field(
        "",
        description="JSON file of API keys (name, hash, scopes, limits; see `candlewire keys "
        "create`), reloaded when it changes; set, it turns authentication on",
    )
    jwt_jwks_url: str = Field(
        "", description="JWKS URL of the issuer of bearer JWTs; set, it turns authentication on"
    )
    jwt_issuer: str = Field("", description="required iss of bearer JWTs (empty: not checked)")
    jwt_audience: str = Field("", description="required aud of bearer JWTs (empty: not checked)")
    jwt_scopes_claim: str = Field(
        "scope", description="claim holding a JWT's scopes (space-separated string or list)"
    )
    anonymous_scopes: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="scopes of calls without a credential while authentication is on (the web "
        "page's read-only access, limited per client address), e.g. prices,candles,streams,"
        "symbols (empty: a credential is required)",
    )
    reflection_open: bool = Field(
        True, description="server reflection needs no credential (false: the read scope)"
    )
    key_rate: float = Field(
        50.0, gt=0, description="unary requests per second per key or token (keys may override)"
    )
    key_streams: int = Field(
        20, ge=0, description="concurrent streams per key or token (keys may override)"
    )
    anonymous_rate: float = Field(
        10.0, gt=0, description="unary requests per second of anonymous calls, per client address"
    )
    anonymous_streams: int = Field(
        4, ge=0, description="concurrent anonymous streams per client address"
    )
    ip_rate: float = Field(
        0.0, ge=0, description="unary requests per second per client address (0: no limit)"
    )
    ip_streams: int = Field(
        0, ge=0, description="concurrent streams per client address (0: no limit)"
    )
    auth_failures_per_minute: int = Field(
        10,
        ge=0,
        description="failed authentications per client address and minute before it is refused "
        "(0: no limit)",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        ("127.0.0.0/8", "::1/128"),
        description="comma-separated networks of proxies whose x-forwarded-for names the client "
        "(the embedded gateway connects from loopback)",
    )
    tls_cert_file: str = Field(
        "", description="PEM certificate chain of both ports (set with the key: TLS on)"
    )
    tls_key_file: str = Field("", description="PEM private key of the certificate")
    tls_client_ca_file: str = Field(
        "", description="PEM CA that client certificates must chain to (set: mutual TLS)"
    )
    metrics_listen: str = Field(
        "", description="host:port of a port serving only /metrics (empty: none)"
    )
    http_metrics: bool = Field(True, description="serve /metrics on the HTTP port too")
    otlp_endpoint: str = Field(
        "",
        description="OTLP/gRPC endpoint for traces of RPCs, e.g. http://collector:4317 "
        "(empty: no tracing)",
    )
    log_format: Literal["text", "json"] = Field("text", description="log format: text or json")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="event loop of `candlewire serve`/`ingest`: uvloop or asyncio"
    )
    access_log: bool = Field(False, description="log one line per RPC (candlewire.access)")

    @field_validator("anonymous_scopes", "trusted_proxies", "saxo_login_allow", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("anonymous_scopes")
    @classmethod
    def _check_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from candlewire.api.auth import SCOPES

        unknown = [s for s in value if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope {unknown[0]!r} (known: {', '.join(sorted(SCOPES))})")
        return value

    @field_validator("trusted_proxies", "saxo_login_allow")
    @classmethod
    def _check_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an address or network") from None
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_listen(value)
        return value

    @field_validator("jwt_jwks_url", "otlp_endpoint")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _check_tls_pair(cls, value: str, info: ValidationInfo) -> str:
        if bool(value) != bool(info.data.get("tls_cert_file")):
            raise ValueError("tls_cert_file and tls_key_file are set together")
        return value

    @field_validator("tls_client_ca_file")
    @classmethod
    def _check_client_ca(cls, value: str, info: ValidationInfo) -> str:
        if value and not info.data.get("tls_cert_file"):
            raise ValueError("mutual TLS needs tls_cert_file and tls_key_file")
        return value

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            value = [v.upper() if isinstance(v, str) else v for v in value]
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol is required")
        for symbol in value:
            if info.data.get("feed") == "saxo":
                if not _FX_PAIR.match(symbol):
                    raise ValueError(f"{symbol!r} is not an FX pair (EURUSD, EUR-USD or EUR/USD)")
            elif not _SYMBOL.match(symbol):
                raise ValueError(f"{symbol!r} is not a symbol (A-Z, 0-9, '.', '_', '-')")
        if len(set(value)) != len(value):
            raise ValueError("symbols must be distinct")
        return value

    @field_validator("intervals", mode="before")
    @classmethod
    def _parse_intervals(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            value = sorted(
                {v if isinstance(v, Interval) else Interval.parse(str(v)) for v in value}
            )
            if not value:
                raise ValueError("at least one interval is required")
        return value

    @field_validator("grpc_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("http_listen")
    @classmethod
    def _check_http_listen(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_listen(value)
        return value

    @field_validator("http_allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("http_allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from candlewire.gateway import normalize_origin

        return tuple(v if v == "*" else normalize_origin(v) for v in value)

    @field_validator("binance_rest_url", "binance_ws_url")
    @classmethod
    def _check_url(cls, value: str, info: ValidationInfo) -> str:
        schemes = (
            ("http://", "https://")
            if info.field_name == "binance_rest_url"
            else ("ws://", "wss://")
        )
        if not value.startswith(schemes):
            raise ValueError(f"{value!r} must start with {' or '.join(schemes)}")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        value = value.strip()
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if value and not value.startswith(schemes):
            raise ValueError(
                f"{value!r} must start with redis://, rediss://, unix:// or, for a Redis Cluster, "
                "redis+cluster:// or rediss+cluster://"
            )
        if value.startswith(("redis+cluster://", "rediss+cluster://")):
            node = value.split("://", 1)[1]
            address, _, database = node.partition("/")
            if not address.rpartition("@")[2] or database.partition("?")[0] not in ("", "0"):
                raise ValueError(
                    f"{value!r}: a cluster URL names one node (host:port) and no database "
                    "(a Redis Cluster has database 0 only)"
                )
        return value

    @field_validator("postgres_url", "postgres_read_url")
    @classmethod
    def _check_postgres_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if value and not value.startswith(("postgresql://", "postgres://")):
            # The value is not repeated: it may hold a password.
            raise ValueError("must start with postgresql:// or postgres://")
        if value and info.field_name == "postgres_read_url" and not info.data.get("postgres_url"):
            raise ValueError("needs postgres_url (CANDLEWIRE_POSTGRES_URL) as well")
        return value

    @field_validator("history_retention")
    @classmethod
    def _check_history_retention(cls, value: str) -> str:
        from candlewire.history.options import parse_retention

        parse_retention(value)
        return value

    @field_validator("redis_prefix", "ingest_shard")
    @classmethod
    def _check_key_part(cls, value: str) -> str:
        """Both go into Redis key names: no hash-tag braces, no spaces."""
        if any(c in value for c in "{} \r\n"):
            raise ValueError(f"{value!r} may not contain braces or spaces")
        return value

    @field_validator("role")
    @classmethod
    def _check_role(cls, value: str, info: ValidationInfo) -> str:
        if value != "all" and not info.data.get("redis_url"):
            raise ValueError(f"{value!r} needs a Redis URL (CANDLEWIRE_REDIS_URL)")
        return value

    @field_validator("saxo_app_key")
    @classmethod
    def _check_saxo_app_key(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if info.data.get("feed") == "saxo" and not value:
            raise ValueError("required when feed is saxo")
        return value

    @field_validator("saxo_redirect_url", "saxo_auth_url", "saxo_rest_url", "saxo_streaming_url")
    @classmethod
    def _check_saxo_url(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        schemes = (
            ("ws://", "wss://")
            if info.field_name == "saxo_streaming_url"
            else ("http://", "https://")
        )
        if value and not value.startswith(schemes):
            raise ValueError(f"{value!r} must start with {' or '.join(schemes)}")
        return value.rstrip("/") if info.field_name != "saxo_redirect_url" else value

    @field_validator("replay_path")
    @classmethod
    def _check_replay_path(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("feed") == "replay" and not value:
            raise ValueError("required when feed is replay")
        return value


def parse_listen(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::]:50051`` for IPv6); the port may be 0 (any free port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per setting; flags left out fall back to env and defaults."""
    for name, field in Settings.model_fields.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} "
            f"(env CANDLEWIRE_{name.upper()}, default {_show(field.default)})",
        )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(v.label if isinstance(v, Interval) else str(v) for v in value) or "none"
    return str(value)


def load(args: argparse.Namespace | None = None, **overrides: Any) -> Settings:
    """Build the settings from flags, overrides, environment and defaults."""
    values: dict[str, Any] = {}
    if args is not None:
        values = {
            k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None
        }
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"][:1])
        lines.append(
            f"  {name} (--{name.replace('_', '-')} / CANDLEWIRE_{name.upper()}): {error['msg']}"
        )
    return "\n".join(lines)


def describe_settings(settings: Settings) -> Sequence[str]:
    """The settings as ``name=value`` lines, for the start-up log (URLs
    without their passwords)."""
    from candlewire.history.options import redact_url

    return [
        f"{name}={redact_url(value) if name.endswith('_url') else value}"
        for name in Settings.model_fields
        for value in (_show(getattr(settings, name)),)
    ]
