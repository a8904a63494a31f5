"""Pure, unit-tested building blocks of the viewer pages (data, viewport maths, figures) and
the thin Streamlit sections (``*_ui``) that lay them out."""
