"""The Streamlit sections of the viewer pages (``*_ui``): widgets, caches and session state
over the pure functions of :mod:`viewer.core` and :mod:`viewer.tiles`."""
