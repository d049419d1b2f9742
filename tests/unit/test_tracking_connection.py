"""The optional ``mlflow_default`` Airflow connection becomes a tracking URI."""

from __future__ import annotations

import pytest

from recsys.tracking import tracking_uri_from_connection


@pytest.mark.parametrize(
    ("conn_type", "host", "port", "path", "expected"),
    [
        ("http", "mlflow", 5000, None, "http://mlflow:5000"),
        ("https", "mlflow.example.com", None, "", "https://mlflow.example.com"),
        ("http", "http://mlflow/", 5000, None, "http://mlflow:5000"),
        ("generic", "https://tracking.internal", 443, "/mlflow/", "https://tracking.internal:443/mlflow"),
        ("http", "mlflow:5000", 5000, None, "http://mlflow:5000"),
    ],
)
def test_connection_fields_give_the_tracking_uri(conn_type, host, port, path, expected):
    assert tracking_uri_from_connection(conn_type, host, port, path) == expected


def test_a_connection_without_host_is_a_clear_error():
    with pytest.raises(ValueError, match="mlflow_default connection has no host"):
        tracking_uri_from_connection("http", "", 5000)
