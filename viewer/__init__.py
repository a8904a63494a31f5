"""HMIL Studio viewer: a Streamlit app over run directories (``hmil view [RUN]``).

``viewer/app.py`` is the entry point (``streamlit run viewer/app.py``); ``viewer/views`` holds the
thin page scripts and ``viewer/components`` the pure, unit-tested functions they call.
"""
