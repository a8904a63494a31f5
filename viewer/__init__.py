"""HMIL Studio viewer: a Streamlit app over run directories (``hmil view [RUN]``).

``viewer/app.py`` is the entry point (``streamlit run viewer/app.py``); ``viewer/views`` holds the
thin page scripts, ``viewer/components`` their Streamlit sections (``*_ui``), ``viewer/core`` the
pure, unit-tested functions those call (no Streamlit there) and ``viewer/tiles`` the Deep Zoom
tile routes.
"""
