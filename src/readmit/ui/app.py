"""The UI's entry script: `readmit ui`, or `streamlit run src/readmit/ui/app.py`.

The sidebar picks a page and shows whether the API answers; pages talk to the API through
`ApiClient` (Monitoring reads monitor-db) and report failures with `st.error`, never a
traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import streamlit as st

from readmit.ui.client import ApiClient, ApiError
from readmit.ui.views import batch, explain, model, monitoring, predict, service

log = logging.getLogger(__name__)

PAGES: dict[str, Callable[[ApiClient], None]] = {
    "Single prediction": predict.render,
    "Batch": batch.render,
    "Explanation": explain.render,
    "Model": model.render,
    "Monitoring": monitoring.render,
    "Service": service.render,
}


def sidebar(client: ApiClient) -> tuple[str, str | None]:
    """The chosen page, and why the API cannot be used (None when it answers)."""
    with st.sidebar:
        st.title("readmit")
        st.caption("30-day readmission risk of diabetic inpatients")
        page = st.radio("Page", list(PAGES), key="page")
        st.divider()
        st.caption(f"API: {client.base_url}")
        try:
            health = client.health()
        except ApiError as exc:
            st.error("API unreachable")
            return page, exc.message
        if health.ready and health.model is not None:
            st.success(f"Serving {health.model.name} v{health.model.version}")
        else:
            st.warning(f"No model loaded: {health.detail}")
    return page, None


def main() -> None:
    st.set_page_config(page_title="readmit", page_icon=":hospital:", layout="wide")
    client = ApiClient()
    page, problem = sidebar(client)
    if problem is not None:
        st.error(problem)
        st.button("Try again", key="retry")
        return
    try:
        PAGES[page](client)
    except ApiError as exc:
        st.error(exc.message)
    except Exception as exc:
        log.exception("page %s failed", page)
        st.error(f"This page failed: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
