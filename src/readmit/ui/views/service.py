"""Service: request rate, latency, errors and predictions, from Prometheus or /metrics."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from readmit.ui.client import ApiClient, ApiError, PrometheusClient, prometheus_url
from readmit.ui.dashboard import Dashboard, from_prometheus, parse_metrics, summarise

PREVIOUS = "service_previous_scrape"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:,.1f} ms"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def _count(value: float, per_second: bool) -> str:
    return f"{value:,.3f}/s" if per_second else f"{value:,.0f}"


def endpoints_table(dashboard: Dashboard) -> pd.DataFrame:
    unit = "per second" if dashboard.per_second else "total"
    return pd.DataFrame(
        [
            {
                "Endpoint": row.endpoint,
                f"Requests ({unit})": round(row.requests, 4),
                f"Errors ({unit})": round(row.errors, 4),
                "Error rate": _ratio(row.error_ratio),
                "p50": _ms(row.p50),
                "p95": _ms(row.p95),
            }
            for row in dashboard.endpoints
        ]
    )


def predictions_chart(dashboard: Dashboard) -> alt.Chart:
    frame = pd.DataFrame(
        {"class": list(dashboard.predictions), "value": list(dashboard.predictions.values())}
    )
    title = "Predictions per second" if dashboard.per_second else "Predictions"
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("value:Q", title=title),
            y=alt.Y("class:N", title=None),
            color=alt.Color(
                "class:N",
                legend=None,
                scale=alt.Scale(
                    domain=["readmitted_30d", "not_readmitted"], range=["#d62728", "#1f77b4"]
                ),
            ),
        )
        .properties(height=120)
    )


def load(client: ApiClient, totals: bool) -> Dashboard:
    """From Prometheus when configured; else from /metrics, compared with the last read."""
    url = prometheus_url()
    if url:
        return from_prometheus(PrometheusClient(url))
    current = parse_metrics(client.metrics_text())
    previous = None if totals else st.session_state.get(PREVIOUS)
    st.session_state[PREVIOUS] = current
    return summarise(current, previous)


def render(client: ApiClient) -> None:
    st.header("Service")
    left, right = st.columns([1, 3])
    left.button("Refresh", key="service_refresh", type="primary")
    totals = right.toggle(
        "Totals since the API started", key="service_totals", disabled=bool(prometheus_url())
    )
    try:
        dashboard = load(client, totals)
    except ApiError as exc:
        st.error(exc.message)
        return
    st.caption(f"Source: {dashboard.source}. Scrapes of /metrics are left out of the headline.")
    per_second = dashboard.per_second
    first, second, third, fourth = st.columns(4)
    first.metric(
        "Request rate" if per_second else "Requests", _count(dashboard.requests, per_second)
    )
    second.metric("Latency p50", _ms(dashboard.p50))
    third.metric("Latency p95", _ms(dashboard.p95))
    fourth.metric("Error rate", _ratio(dashboard.error_ratio))
    st.subheader("Predictions by class")
    if dashboard.predictions:
        cells = st.columns(len(dashboard.predictions))
        for cell, (name, value) in zip(cells, dashboard.predictions.items(), strict=True):
            cell.metric(name, _count(value, per_second))
        st.altair_chart(predictions_chart(dashboard), width="stretch")
    else:
        st.info("No predictions recorded yet.")
    st.subheader("By endpoint")
    if dashboard.endpoints:
        st.dataframe(endpoints_table(dashboard), hide_index=True, width="stretch")
    else:
        st.info("No requests recorded yet.")
    st.caption("Latency quantiles are estimated from the histogram buckets, as Prometheus does.")
