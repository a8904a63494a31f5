"""Training page: launch folds in the background, follow their curves, stop them."""

from __future__ import annotations

import streamlit as st

from viewer.components import shell_ui, train_ui


@st.fragment(run_every=train_ui.REFRESH_S)
def live_monitor() -> None:
    """Re-drawn every few seconds on its own (the rest of the page is not re-run)."""
    cfg = shell_ui.settings()
    run = train_ui.monitor_run_picker(cfg, shell_ui.current_run())
    if run is not None:
        train_ui.monitor(run, cfg.roots)


def main() -> None:
    st.title("Training")
    cfg = shell_ui.settings()
    st.subheader("Runs")
    live_monitor()
    st.subheader("Launch")
    train_ui.launch_form(cfg, shell_ui.current_run())


shell_ui.restore(*train_ui.PERSISTENT_KEYS)
try:
    main()
finally:
    shell_ui.keep(*train_ui.PERSISTENT_KEYS)
