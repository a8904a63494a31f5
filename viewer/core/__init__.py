"""The viewer's pure core: no Streamlit here, so every function is unit-tested without a page.

Paths and data roots (:mod:`.paths`), runs and their tables (:mod:`.runs`, :mod:`.cohort`),
inference on a bag (:mod:`.inference`), detached training processes (:mod:`.launches`), the
slide page's state and address (:mod:`.slide_state`, :mod:`.address`), figures and pictures
(:mod:`.charts`, :mod:`.rendering`). The Streamlit sections over them are the ``*_ui`` modules
of :mod:`viewer.components`; the pages are ``viewer/views/``.
"""
