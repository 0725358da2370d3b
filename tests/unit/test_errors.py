"""The first line of an error: what one-line messages and logs carry."""

from __future__ import annotations

import logging

import pytest

from readmit.errors import first_line
from readmit.exporter import PipelineCollector
from readmit.settings import Settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (RuntimeError("disk full\nTraceback follows"), "disk full"),
        (ValueError("\n  leading blank line\nsecond"), "leading blank line"),
        ("plain text\r\nmore", "plain text"),
        (RuntimeError(), ""),
        (RuntimeError("   \n  "), ""),
        ("", ""),
    ],
)
def test_first_line_is_the_first_non_blank_line_or_empty(value, expected):
    assert first_line(value) == expected


def test_an_exporter_scrape_survives_a_registry_error_without_a_message(
    tmp_path, monkeypatch, caplog
):
    """An exception with an empty message (a bare `raise ConnectionError()`) is logged as
    such; the scrape still answers with the gauges it could read."""

    def unreachable(settings):  # stands in for a registry that fails without saying why
        raise ConnectionError()

    monkeypatch.setattr("readmit.registry.client_for", unreachable)
    collector = PipelineCollector(Settings(data_dir=tmp_path))
    with caplog.at_level(logging.WARNING, logger="readmit.exporter"):
        names = [family.name for family in collector.collect()]
    assert "readmit_pipeline_rows" in names
    assert "readmit_production_model_version" not in names
    unreadable = [r for r in caplog.records if r.getMessage() == "registry unreadable"]
    assert [getattr(r, "error", None) for r in unreadable] == [""]
