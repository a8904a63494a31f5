"""What every page shares: settings, the sidebar run picker, the SYNTHETIC banner.

Session state used here: ``run`` and ``run_picker`` (:mod:`viewer.core.run_pick`), the
widget key ``run_path`` and its ``run_path_error``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, cast

import streamlit as st

from hmil.errors import HMILError
from viewer.components import cached_ui
from viewer.core import address, choices, run_pick, runs, text
from viewer.core.run_pick import NO_RUN, PICKER_KEY, RUN_KEY
from viewer.state import ViewerSettings, settings_from_env


def session_state() -> MutableMapping[str, Any]:
    """``st.session_state`` as the mapping the pure helpers take (streamlit types its keys
    ``str | int``; every key of this viewer is a string)."""
    return cast("MutableMapping[str, Any]", st.session_state)


@st.cache_resource(show_spinner=False)
def _settings_for(env_key: tuple[tuple[str, str], ...], cwd: str) -> ViewerSettings:
    return settings_from_env(dict(env_key), cwd=cwd)


def settings() -> ViewerSettings:
    """The viewer's settings (from ``HMIL_VIEW_*``), computed once per environment."""
    import os

    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("HMIL_VIEW_")))
    return _settings_for(env, os.getcwd())


def current_run() -> Path | None:
    """The run chosen in the sidebar (None: no run, model-only mode)."""
    return run_pick.current_run(session_state())


def known_runs(cfg: ViewerSettings) -> list[Path]:
    """Runs under the data roots, the start run first."""
    found = cached_ui.discover_runs(cfg.roots)
    ordered = [cfg.run] if cfg.run is not None else []
    return ordered + [r for r in found if r != cfg.run]


def _open_typed_run() -> None:
    state = session_state()
    typed = state.get("run_path", "").strip()
    if not typed:
        return
    problem = run_pick.open_run(state, typed, settings().roots)
    if problem is None:
        state.pop("run_path_error", None)
    else:
        state["run_path_error"] = problem


def _pick_run() -> None:
    state = session_state()
    state[RUN_KEY] = state.get(PICKER_KEY, NO_RUN)


def sidebar(cfg: ViewerSettings) -> Path | None:
    """Run picker in the sidebar; returns the current run."""
    state = session_state()
    options = [str(r) for r in known_runs(cfg)]
    if RUN_KEY not in state:
        state[RUN_KEY] = str(cfg.run) if cfg.run is not None else NO_RUN
    current = state[RUN_KEY]
    if current and current not in options:
        options.insert(0, current)
    options.append(NO_RUN)
    choices.keep_choice(state, PICKER_KEY, options, current)
    with st.sidebar:
        st.selectbox(
            "Run",
            options,
            key=PICKER_KEY,
            format_func=lambda p: run_pick.label_run(p, cfg.roots),
            on_change=_pick_run,
            help="Run directories found under the data roots.",
        )
        st.text_input(
            "Open run by path",
            key="run_path",
            on_change=_open_typed_run,
            placeholder="path/to/run",
            help="Any run directory below a data root.",
        )
        if state.get("run_path_error"):
            st.error(state["run_path_error"])
        with st.expander("Data roots", expanded=False):
            st.caption("The viewer reads files below these only (`hmil view --data-root DIR`).")
            # plain text: st.code would load a 1.5 MB syntax highlighter into every page
            st.text("\n".join(str(r) for r in cfg.roots) or "(none)")
    return current_run()


def synthetic_banner(run: Path | None) -> None:
    """A banner on every page when the run's data is SYNTHETIC."""
    if run is None:
        return
    try:
        info, _, _ = cached_ui.run_tables(run, settings().roots)
    except HMILError:
        return
    if runs.is_synthetic(info):
        st.warning(
            "**SYNTHETIC data** — this run was trained on generated slides and features "
            "(no patient data). Predictions and attention maps demonstrate the software only.",
            icon=":material/science:",
        )


def apply_address() -> None:
    """An address the page did not write itself (a new session, a pasted link, back /
    forward) sets what the slide page shows: run, slide, label, viewport, style
    (:mod:`viewer.core.address`).

    Runs before the sidebar's widgets exist, so it may set their state. A run outside the data
    roots is refused like a typed path, and any value that does not parse is ignored with a
    note on the page.
    """
    state = session_state()
    incoming = address.single(st.query_params)
    if not address.incoming_changed(state, incoming):
        return
    run = incoming.get(address.RUN)
    notes: list[str] = []
    if run:
        problem = run_pick.open_run(state, run, settings().roots)
        if problem is not None:
            notes.append(problem)
    notes += address.apply(state, incoming)
    state[address.NOTES_KEY] = notes
    viewport = {k: incoming[k] for k in address.VIEWPORT if k in incoming}
    state["_address_viewport"] = {"slide": address.shown_key(incoming), "params": viewport}
    state[address.WRITTEN_KEY] = {
        k: v for k, v in incoming.items() if k in address.BY_NAME or k == address.RUN
    }


#: the slide page's view starts near the top: less blank space above the first element
COMPACT_CSS = """<style>
[data-testid="stMainBlockContainer"] { padding-top: 3.2rem; padding-bottom: 2rem; }
[data-testid="stMainBlockContainer"] [data-testid="stAlert"] { padding: 0; }
[data-testid="stFileUploaderDropzoneInstructions"] { display: none; }
</style>"""


def compact_layout() -> None:
    """Less padding above the page, and no size line under file uploaders (Streamlit rounds
    512 MB to "1GB per file"; the uploaders' labels state the limit instead). One style
    element, no script."""
    st.html(COMPACT_CSS)


def restore(*keys: str) -> None:
    """Bring back widget values of this page after a visit to another page.

    Streamlit forgets the state of widgets that were not drawn in a run; :func:`keep` saves it
    under ``_keep_<key>`` and this puts it back before the widgets are created. A value still
    held is written again too: a widget that was off the page for a run (the slide page's
    overlay controls in upload mode before the bag arrives) is otherwise re-created in the
    browser at its own default (opacity 0, the first colormap) while the server keeps the old
    value, and the browser's value wins at the next interaction.
    """
    choices.restore_widgets(session_state(), keys)


def keep(*keys: str) -> None:
    """Save widget values of this page for :func:`restore` (``_keep_<key>``)."""
    choices.keep_widgets(session_state(), keys)


def show_problem(exc: Exception) -> None:
    """One clear line for a user-facing problem (no traceback); paths and names in it are
    shown as typed (no Markdown)."""
    st.error(text.markdown(str(exc)), icon=":material/block:")
