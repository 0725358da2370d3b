"""Two apps in one process keep their own metrics, even once a library has pointed
prometheus_client's multiprocess variables at a folder of its own (Feast does, on import, and
MLflow's plugins import Feast)."""

from __future__ import annotations

from prometheus_client import values

from readmit.serving.metrics import Metrics


def test_each_app_counts_its_own_requests_whatever_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # as Feast leaves it
    first, second = Metrics(), Metrics()
    first.requests.labels(endpoint="/predict", method="POST", status="200").inc(3)
    line = 'readmit_http_requests_total{endpoint="/predict",method="POST",status="200"}'
    assert f"{line} 3.0" in first.render().decode()
    assert line not in second.render().decode()
    assert list(tmp_path.iterdir()) == []  # nothing written to the other library's folder
