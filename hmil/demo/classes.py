"""The demo's label tree: 6 synthetic fine classes under 3 coarse groups.

The appearance of each class is designed so that the hierarchy matters: the coarse group sets
the *strong* cues (how crowded and how dark the nuclei are), and the two siblings inside a
group differ by *weaker* cues (nuclear size, pleomorphism, chromatin, lumens, cytoplasm). A
patch-level colour-deconvolution + texture descriptor separates all six, but siblings are closer
to each other than to any class of another group. ``normal`` slides carry no lesion at all, so
telling ``normal`` from ``hyperplasia`` means finding a small pale lesion.

None of this is pathology: names only hint at what the appearance imitates.
"""

from __future__ import annotations

from dataclasses import dataclass

from hmil.demo.textures import LesionAppearance
from hmil.hierarchy import Hierarchy

HIERARCHY_NAME = "synthetic-demo"
COARSE_CLASSES = ("benign", "atypical", "malignant")


@dataclass(frozen=True)
class DemoClass:
    """One fine class of the demo.

    Attributes:
        name: fine label (as written in ``labels.csv``).
        coarse: parent coarse class.
        look: appearance of the planted lesion; None for slides without a lesion.
        summary: one line for README and model card.
    """

    name: str
    coarse: str
    look: LesionAppearance | None
    summary: str


DEMO_CLASSES: tuple[DemoClass, ...] = (
    DemoClass("normal", "benign", None, "no lesion: stroma and glands only"),
    DemoClass(
        "hyperplasia",
        "benign",
        LesionAppearance(
            nuclear_density=0.14,
            nuclear_radius=6.0,
            pleomorphism=0.08,
            elongation=2.0,
            nuclear_h=0.7,
            chromatin=0.15,
            nucleoli=0.0,
            cytoplasm_e=0.45,
            cytoplasm_h=0.05,
            lumen_density=8.0,
            lumen_radius=14.0,
        ),
        "sparse small regular pale oval nuclei, pink cytoplasm, a few small lumens",
    ),
    DemoClass(
        "atypia-small",
        "atypical",
        LesionAppearance(
            nuclear_density=0.38,
            nuclear_radius=5.5,
            pleomorphism=0.15,
            elongation=1.2,
            nuclear_h=1.05,
            chromatin=0.3,
            nucleoli=0.0,
            cytoplasm_e=0.32,
            cytoplasm_h=0.10,
            lumen_density=25.0,
            lumen_radius=20.0,
        ),
        "crowded small darker nuclei around round (cribriform) lumens",
    ),
    DemoClass(
        "atypia-large",
        "atypical",
        LesionAppearance(
            nuclear_density=0.38,
            nuclear_radius=8.5,
            pleomorphism=0.20,
            elongation=1.3,
            nuclear_h=1.0,
            chromatin=0.3,
            nucleoli=0.1,
            cytoplasm_e=0.38,
            cytoplasm_h=0.10,
        ),
        "crowded enlarged darker nuclei in a solid sheet",
    ),
    DemoClass(
        "carcinoma-small",
        "malignant",
        LesionAppearance(
            nuclear_density=0.55,
            nuclear_radius=6.0,
            pleomorphism=0.30,
            elongation=1.2,
            nuclear_h=1.4,
            chromatin=0.45,
            nucleoli=0.1,
            cytoplasm_e=0.22,
            cytoplasm_h=0.14,
        ),
        "packed small very dark pleomorphic nuclei, scant cytoplasm",
    ),
    DemoClass(
        "carcinoma-large",
        "malignant",
        LesionAppearance(
            nuclear_density=0.52,
            nuclear_radius=10.5,
            pleomorphism=0.35,
            elongation=1.3,
            nuclear_h=1.25,
            chromatin=0.6,
            nucleoli=0.5,
            cytoplasm_e=0.35,
            cytoplasm_h=0.12,
        ),
        "packed large pleomorphic nuclei with coarse chromatin and nucleoli",
    ),
)


def demo_class(name: str) -> DemoClass:
    """The :class:`DemoClass` called ``name`` (KeyError if unknown)."""
    for cls in DEMO_CLASSES:
        if cls.name == name:
            return cls
    raise KeyError(name)


def demo_hierarchy() -> Hierarchy:
    """The demo's :class:`~hmil.hierarchy.Hierarchy` (fine classes in DEMO_CLASSES order)."""
    return Hierarchy.from_dict(
        {
            "name": HIERARCHY_NAME,
            "coarse": list(COARSE_CLASSES),
            "fine": {cls.name: cls.coarse for cls in DEMO_CLASSES},
        },
        source="demo hierarchy",
    )
