"""Settings come from the environment; bad values stop the service with exit 2."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from services.kit import EXIT_BAD_SETTINGS, Settings, SettingsError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_an_empty_environment_gives_the_cluster_defaults() -> None:
    settings = Settings.from_environ({"POD_NAME": "catalog-0"})

    assert settings == Settings(
        pod_name="catalog-0",
        bind_host="0.0.0.0",
        port=8080,
        catalog_url="http://catalog:8080",
        customer_url="http://customer:8080",
        upstream_timeout_seconds=2.0,
        upstream_keepalive=False,
        graceful_timeout_seconds=10.0,
        drain_seconds=0.0,
        metrics_enabled=True,
        log_level="INFO",
    )


def test_the_pod_name_falls_back_to_the_host_name() -> None:
    import socket

    assert Settings.from_environ({}).pod_name == socket.gethostname()


#: Each variable, a value for it, and the setting that value gives.
EVERY_VARIABLE = (
    ("POD_NAME", "order-7", "pod_name", "order-7"),
    ("BIND_HOST", "127.0.0.1", "bind_host", "127.0.0.1"),
    ("PORT", "9000", "port", 9000),
    ("CATALOG_URL", "http://127.0.0.1:9001/", "catalog_url", "http://127.0.0.1:9001"),
    (
        "CUSTOMER_URL",
        "https://customer.shop.svc:8443",
        "customer_url",
        "https://customer.shop.svc:8443",
    ),
    ("UPSTREAM_TIMEOUT_SECONDS", "0.5", "upstream_timeout_seconds", 0.5),
    ("UPSTREAM_KEEPALIVE", "True", "upstream_keepalive", True),
    ("GRACEFUL_TIMEOUT_SECONDS", "3", "graceful_timeout_seconds", 3.0),
    ("DRAIN_SECONDS", "1.5", "drain_seconds", 1.5),
    ("METRICS_ENABLED", "no", "metrics_enabled", False),
    ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
)


def test_every_variable_is_read() -> None:
    environ = {variable: raw for variable, raw, _, _ in EVERY_VARIABLE}

    settings = Settings.from_environ(environ)

    expected = {field: value for _, _, field, value in EVERY_VARIABLE}
    assert set(expected) == {field.name for field in dataclasses.fields(Settings)}
    assert settings == Settings(**expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("POD_NAME", "pod\nX-Evil: 1", id="pod-name-with-newline"),
        pytest.param("BIND_HOST", "localhost", id="host-name-instead-of-address"),
        pytest.param("PORT", "http", id="port-not-a-number"),
        pytest.param("PORT", "0", id="port-zero"),
        pytest.param("PORT", "70000", id="port-too-high"),
        pytest.param("CATALOG_URL", "catalog:8080", id="url-without-scheme"),
        pytest.param("CUSTOMER_URL", "http://customer:port", id="url-with-bad-port"),
        pytest.param("CATALOG_URL", "http://catalog/api", id="url-with-path"),
        pytest.param("UPSTREAM_TIMEOUT_SECONDS", "0", id="timeout-zero"),
        pytest.param("UPSTREAM_TIMEOUT_SECONDS", "nan", id="timeout-nan"),
        pytest.param("GRACEFUL_TIMEOUT_SECONDS", "-1", id="graceful-negative"),
        pytest.param("DRAIN_SECONDS", "soon", id="drain-not-a-number"),
        pytest.param("UPSTREAM_KEEPALIVE", "maybe", id="keepalive-not-a-boolean"),
        pytest.param("METRICS_ENABLED", "2", id="metrics-not-a-boolean"),
        pytest.param("LOG_LEVEL", "loud", id="unknown-log-level"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({name: value})

    message = str(caught.value)
    assert message.startswith(f"{name}={value!r} ")
    assert "\n" not in message


def test_a_service_with_a_bad_variable_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.catalog"],
        cwd=PROJECT_ROOT,
        env={"PORT": "eighty", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == EXIT_BAD_SETTINGS
    assert result.stderr.splitlines() == [
        "catalog: PORT='eighty' is not a port number; "
        "set it to an integer from 1 to 65535"
    ]
