"""Settings of a service, read once from its environment.

Kubernetes configures a pod through environment variables, so every knob of a
service is one variable with a default that suits the cluster. A bad value
stops the service at start with one line naming the variable, instead of a
surprise under load.
"""

import ipaddress
import logging
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything a service reads from its environment."""

    pod_name: str
    bind_host: str = "0.0.0.0"
    port: int = 8080
    catalog_url: str = "http://catalog:8080"
    customer_url: str = "http://customer:8080"
    upstream_timeout_seconds: float = 2.0
    upstream_keepalive: bool = False
    graceful_timeout_seconds: float = 10.0
    drain_seconds: float = 0.0
    metrics_enabled: bool = True
    log_level: str = "INFO"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Read the settings from ``environ`` (the process environment if None)."""
        env = os.environ if environ is None else environ
        return cls(
            pod_name=_pod_name(env, "POD_NAME"),
            bind_host=_host(env, "BIND_HOST", cls.bind_host),
            port=_port(env, "PORT", cls.port),
            catalog_url=_url(env, "CATALOG_URL", cls.catalog_url),
            customer_url=_url(env, "CUSTOMER_URL", cls.customer_url),
            upstream_timeout_seconds=_seconds(
                env,
                "UPSTREAM_TIMEOUT_SECONDS",
                cls.upstream_timeout_seconds,
                zero=False,
            ),
            upstream_keepalive=_flag(env, "UPSTREAM_KEEPALIVE", cls.upstream_keepalive),
            graceful_timeout_seconds=_seconds(
                env, "GRACEFUL_TIMEOUT_SECONDS", cls.graceful_timeout_seconds
            ),
            drain_seconds=_seconds(env, "DRAIN_SECONDS", cls.drain_seconds),
            metrics_enabled=_flag(env, "METRICS_ENABLED", cls.metrics_enabled),
            log_level=_log_level(env, "LOG_LEVEL", cls.log_level),
        )

    @property
    def log_level_number(self) -> int:
        """Return the log level as the number :mod:`logging` uses."""
        return logging.getLevelNamesMapping()[self.log_level]


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _pod_name(env: Mapping[str, str], name: str) -> str:
    value = _raw(env, name) or socket.gethostname()
    # It goes into a response header, so it must be plain printable ASCII.
    if not value.isascii() or not value.isprintable() or len(value) > 253:
        raise SettingsError(
            f"{name}={value!r} cannot name the pod in a header; set it to "
            "printable ASCII of at most 253 characters"
        )
    return value


def _host(env: Mapping[str, str], name: str, default: str) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    # An address literal only: resolving a name would ask the machine's resolver.
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise SettingsError(
            f"{name}={value!r} is not an IP address; set it to one, "
            "such as 0.0.0.0 or 127.0.0.1"
        ) from None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _raw(env, name)
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SettingsError(
            f"{name}={value!r} is not a port number; set it to an integer "
            "from 1 to 65535"
        )
    return int(value)


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        parts = urlsplit(value)
        valid = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and parts.path in ("", "/")
            and not parts.query
            and not parts.fragment
        )
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise SettingsError(
            f"{name}={value!r} is not a base URL; set it to one such as "
            "http://catalog:8080"
        )
    return value.rstrip("/")


def _seconds(
    env: Mapping[str, str], name: str, default: float, *, zero: bool = True
) -> float:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    lowest_ok = seconds >= 0 if zero else seconds > 0
    if not math.isfinite(seconds) or not lowest_ok or seconds > 3600:
        least = "0" if zero else "more than 0"
        raise SettingsError(
            f"{name}={value!r} is not a duration; set it to a number of seconds "
            f"from {least} to 3600"
        )
    return seconds


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(env, name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean; set it to true or false")


def _log_level(env: Mapping[str, str], name: str, default: str) -> str:
    value = _raw(env, name)
    if value is None:
        return default
    if value.upper() not in _LOG_LEVELS:
        raise SettingsError(
            f"{name}={value!r} is not a log level; set it to one of "
            f"{', '.join(_LOG_LEVELS)}"
        )
    return value.upper()
