"""Deep Zoom tiles of slides and attention overlays, served from the viewer's own port.

:mod:`.sources` opens a slide as a Deep Zoom pyramid, :mod:`.registry` maps opaque slide keys to
files the pages admitted, :mod:`.overlay` turns class-wise attention into the compact payload
the browser colours (or into overlay tiles), and :mod:`.routes` exposes it all as Starlette
routes that :mod:`viewer.server` mounts beside the Streamlit app.
"""
