"""The synthetic demo: small H&E-like slides with planted lesions, and ``hmil demo``.

* :mod:`hmil.demo.classes` — the demo's 3 coarse / 6 fine label tree and class appearances;
* :mod:`hmil.demo.textures` — H&E stain-space textures (real tissue from scikit-image + procedural);
* :mod:`hmil.demo.synthetic_slides` — one slide: layout, rendering, ground-truth masks;
* :mod:`hmil.demo.tiff` — pyramidal JPEG TIFF writer that OpenSlide reads;
* :mod:`hmil.demo.cohort` — the cohort folder (slides, masks, labels, hierarchy, manifest);
* :mod:`hmil.demo.pipeline` — cohort → tile → extract → split → train → evaluate;
* :mod:`hmil.demo.model_card` — the shipped demo checkpoint and its model card.

Everything it produces is synthetic and labelled so.
"""
