"""Helpers to drive the app with Streamlit's AppTest and read what it shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

import readmit.ui

APP = Path(readmit.ui.__file__).parent / "app.py"


def open_page(page: str | None = None, **state: Any) -> AppTest:
    """The app after its first run, on `page` (the sidebar's choice), with session `state`
    set beforehand (how a value typed into a widget arrives)."""
    app = AppTest.from_file(str(APP), default_timeout=60)
    if page is not None:
        app.session_state["page"] = page
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def click(app: AppTest, label: str) -> AppTest:
    """Press the button (or form submit button) with this label and rerun."""
    matches = [b for b in app.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in app.button]}"
    return matches[0].click().run()


def metrics(app: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in app.metric}


def errors(app: AppTest) -> list[str]:
    return [e.value for e in app.error]


def captions(app: AppTest) -> list[str]:
    return [c.value for c in app.caption]


def assert_clean(app: AppTest) -> None:
    """No exception element (a traceback on the page) and no failed script run."""
    assert not app.exception, [e.value for e in app.exception]
