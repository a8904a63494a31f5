"""Files both ways with CLAM, TRIDENT and torchmil, checked against the peers' reading code.

torchmil is installed (requirements-dev), so its ``TridentWSIDataset`` runs as is. CLAM's and
TRIDENT's readers need torchvision/geopandas/cv2, which do not install beside this CPU torch;
their patch-reading rules are restated here from their code (CLAM 53e2409
``dataset_modules/dataset_h5.py`` ``Whole_Slide_Bag_FP.__getitem__``; TRIDENT a91fa84
``wsi_objects/WSIPatcher.py`` ``__init__``/``_prepare``/``get_tile_xy`` and
``WSI.extract_patch_features``). Slides: real TCGA/OpenSlide ones (``../shared``) and SYNTHETIC
pyramids; weights SEEDED RANDOM.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
import torch
from PIL import Image
from slide_helpers import disc_image
from small_encoders import save_weights, small_encoder_class, small_state_dict

from hmil.cli import main
from hmil.data.bags import load_bag
from hmil.errors import BagError
from hmil.slides.extract import ExtractConfig, extract_slides
from hmil.slides.tile_batch import tile_slides
from hmil.slides.tissue import TilingConfig

TCGA = "tcga-cr-7395-01a-01-ts1.svs"  # no magnification metadata; 0.25 µm/px given by hand


def clam_read(slide: Path, patch_file: Path, index: int) -> Image.Image:
    """CLAM's ``Whole_Slide_Bag_FP``: ``patch_size`` pixels at ``patch_level``."""
    with h5py.File(patch_file, "r") as f:
        coord = f["coords"][index]
        level, size = int(f["coords"].attrs["patch_level"]), int(f["coords"].attrs["patch_size"])
    with openslide.OpenSlide(str(slide)) as wsi:
        return wsi.read_region(tuple(int(v) for v in coord), level, (size, size)).convert("RGB")


def trident_read(slide: Path, patch_file: Path, index: int) -> tuple[Image.Image, int, int]:
    """TRIDENT's ``WSIPatcher`` with a ``<id>_patches.h5``'s attributes (pil=True).

    Returns:
        The tile at ``patch_size`` and the (level, size) it was read at.
    """
    with h5py.File(patch_file, "r") as f:
        a = dict(f["coords"].attrs)
        coord = f["coords"][index]
    downsample = (10 / a["target_magnification"]) / (10 / a["level0_magnification"])
    size_src = round(a["patch_size"] * downsample)
    with openslide.OpenSlide(str(slide)) as wsi:
        downsamples = wsi.level_downsamples
        exact = [i for i, d in enumerate(downsamples) if abs(d - downsample) <= 0.1]
        level = exact[0] if exact else max(i for i, d in enumerate(downsamples) if d <= downsample)
        size_level = round(size_src / int(downsamples[level]))
        tile = wsi.read_region(tuple(int(v) for v in coord), level, (size_level, size_level))
    tile = tile.convert("RGB").resize((int(a["patch_size"]),) * 2)  # Pillow default: bicubic
    return tile, level, size_level


@pytest.fixture(scope="module")
def cmu_10x(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``hmil tile`` of cmu-1 (20x, one level) at 10x with 32 px overlap, TRIDENT's folder name."""
    out = tmp_path_factory.mktemp("cmu") / "10x_256px_32px_overlap"
    slide = slides_dir / "cmu-1-small-region.svs"
    code = main(["tile", str(slide), "--out", str(out), "--magnification", "10",
                 "--overlap", "32", "--quiet"])  # fmt: skip
    assert code == 0
    return out


def test_a_magnification_without_its_level_is_read_whole(slides_dir: Path, cmu_10x: Path) -> None:
    """cmu-1 is 20x with one level; 10x patches are 512 level-0 pixels, resized to 256.
    Before, CLAM read ``patch_size`` = 256 there: half the side."""
    out = cmu_10x
    slide = slides_dir / "cmu-1-small-region.svs"
    assert clam_read(slide, out / "patches" / "cmu-1-small-region.h5", 0).size == (512, 512)
    tile, level, size_level = trident_read(
        slide, out / "patches" / "cmu-1-small-region_patches.h5", 0
    )
    assert (level, size_level, tile.size) == (0, 512, (256, 256))
    with h5py.File(out / "patches" / "cmu-1-small-region_patches.h5") as f:
        coords, attrs = f["coords"][()], dict(f["coords"].attrs)
    assert attrs["overlap"] == 32 and attrs["patch_size_level0"] == 512
    steps = np.diff(np.unique(coords[:, 0]))
    assert steps.min() == ((256 - 32) * 2)  # TRIDENT: step = (patch − overlap) at level 0


def test_features_equal_trident_reading_with_the_same_weights(
    slides_dir: Path, cmu_10x: Path, tmp_path: Path
) -> None:
    """End to end: hmil extract = TRIDENT's reading + torchvision transform + the same network
    (restated with Pillow + numpy), for a 2× read (bicubic to the tile, then the encoder's)."""
    out = tmp_path / cmu_10x.name
    (out / "patches").mkdir(parents=True)
    name = "cmu-1-small-region_patches.h5"  # TRIDENT's file only
    (out / "patches" / name).write_bytes((cmu_10x / "patches" / name).read_bytes())
    slide = slides_dir / "cmu-1-small-region.svs"
    cls = small_encoder_class("virchow2")  # bicubic resize, class token ‖ mean patch token
    encoder = cls(weights=save_weights(tmp_path / "v2.bin", small_state_dict("virchow2")),
                  device=torch.device("cpu"))  # fmt: skip
    report = extract_slides([slide], out, tmp_path / "bags", encoder, progress=False)
    assert report.done
    bag = load_bag(tmp_path / "bags" / "cmu-1-small-region.h5")
    pre = encoder.preprocess
    reference = []
    for i in range(bag.n_instances):
        tile, _, _ = trident_read(slide, out / "patches" / "cmu-1-small-region_patches.h5", i)
        image = tile.resize((pre.input_size,) * 2, Image.Resampling.BICUBIC)
        x = np.asarray(image).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        x = (x - np.float32(pre.mean)[:, None, None]) / np.float32(pre.std)[:, None, None]
        reference.append(x)
    with torch.no_grad():
        expected = encoder._net(torch.from_numpy(np.stack(reference)))
    torch.testing.assert_close(bag.features, expected, rtol=0, atol=1e-5)
    assert bag.attrs["encoder"] == "virchow2" and bag.attrs["encoder_weights_sha256"]


def test_torchmil_trident_dataset_reads_hmil_tiles_and_bags(
    disc_slide: Path, tmp_path: Path
) -> None:
    from torchmil.datasets import TridentWSIDataset

    job = tmp_path / "job"
    folder = job / "10x_64px_0px_overlap"
    tile_slides([disc_slide], folder, TilingConfig(patch_size=64, magnification=10,
                                                   trident_names=True), progress=False)  # fmt: skip
    extract_slides([disc_slide], folder, folder / "features_hed-texture", "hed-texture",
                   device="cpu", progress=False)  # fmt: skip
    labels = tmp_path / "labels.csv"
    labels.write_text("wsi,label\ndisc,1\n")
    common = dict(
        labels_path=str(labels), feature_extractor="hed-texture", patch_size=64,
        bag_keys=["X", "Y", "coords"], wsi_name_col="wsi", wsi_label_col="label",
    )  # fmt: skip
    if "magnification" in inspect.signature(TridentWSIDataset).parameters:  # torchmil git main
        dataset = TridentWSIDataset(base_path=f"{job}/", magnification=10, **common)
    else:  # torchmil 1.0.2 (PyPI): base_path is the <mag>x_<ps>px_<ov>px_overlap folder
        dataset = TridentWSIDataset(base_path=f"{folder}/", **common)
    bag = dataset[0]
    n = load_bag(folder / "features_hed-texture" / "disc.h5").n_instances
    assert tuple(bag["X"].shape) == (n, 104) and tuple(bag["coords"].shape) == (n, 2)


def test_trident_pt_bags_load_safely_and_empty_bags_say_so(tmp_path: Path) -> None:
    features = np.random.default_rng(0).normal(size=(7, 12)).astype(np.float32)
    torch.save(features, tmp_path / "s1.pt")  # TRIDENT saveas="pt": a pickled numpy array
    bag = load_bag(tmp_path / "s1.pt")
    np.testing.assert_array_equal(bag.features.numpy(), features)
    torch.save(np.empty((0,), dtype=np.float32), tmp_path / "empty.pt")  # TRIDENT, no tissue
    with pytest.raises(BagError, match=r"empty bag: features of shape \(0,\)"):
        load_bag(tmp_path / "empty.pt")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["features"] = np.empty((0,), dtype=np.float32)
        f["coords"] = np.empty((0, 2), dtype=np.int64)
    with pytest.raises(BagError, match="empty bag"):
        load_bag(tmp_path / "empty.h5")

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("must not run",))

    torch.save({"features": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(BagError, match="not a readable torch file"):
        load_bag(tmp_path / "evil.pt")


def test_clam_and_torchmil_layouts_find_their_coords(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(5, 8)).astype(np.float32)
    coords = np.arange(10, dtype=np.int64).reshape(5, 2) * 256
    clam = tmp_path / "FEATURES"
    (clam / "pt_files").mkdir(parents=True)
    (clam / "h5_files").mkdir()
    torch.save(torch.from_numpy(features), clam / "pt_files" / "s1.pt")
    with h5py.File(clam / "h5_files" / "s1.h5", "w") as f:  # CLAM: no attributes at all
        f["features"] = features
        f["coords"] = coords.astype(np.int32)
    bag = load_bag(clam / "pt_files" / "s1.pt")
    assert (bag.coords == coords).all() and bag.attrs["coords_file"].endswith("s1.h5")
    root = tmp_path / "patches_512"  # torchmil: features/features_<enc>/ and coords/
    (root / "features" / "features_uni").mkdir(parents=True)
    (root / "coords").mkdir()
    np.save(root / "features" / "features_uni" / "s2.npy", features)
    np.save(root / "coords" / "s2.npy", coords)
    bag = load_bag(root / "features" / "features_uni" / "s2.npy")
    np.testing.assert_array_equal(bag.features.numpy(), features)
    assert (bag.coords == coords).all()
    np.save(root / "coords" / "s2.npy", coords[:3])
    with pytest.raises(BagError, match=r"3 coords in .* for 5 feature vectors"):
        load_bag(root / "features" / "features_uni" / "s2.npy")


def test_hmil_pt_bags_are_what_clams_loader_takes(disc_slide: Path, tmp_path: Path) -> None:
    tiles = tmp_path / "tiles"
    tile_slides([disc_slide], tiles, TilingConfig(patch_size=64, magnification=10), progress=False)
    extract_slides([disc_slide], tiles, tmp_path / "pt_files", "hed-texture", device="cpu",
                   config=ExtractConfig(formats=("pt",)), progress=False)  # fmt: skip
    # CLAM's Generic_MIL_Dataset: features = torch.load(os.path.join(data_dir, 'pt_files', ...))
    features = torch.load(tmp_path / "pt_files" / "disc.pt")
    assert isinstance(features, torch.Tensor) and features.ndim == 2 and features.shape[1] == 104


def test_a_synthetic_two_level_pyramid_is_read_at_the_right_level(
    make_slide: object, tmp_path: Path
) -> None:
    """A 20x SYNTHETIC slide with levels 1× and 4× tiled at 10×: no 2× level, so level 0 at
    twice the size; with a 2× level, that level at the tile size."""
    image = disc_image()
    for downsamples, expected in (((1, 4), (0, 128)), ((1, 2, 4), (1, 64))):
        path = make_slide(f"disc{len(downsamples)}.tiff", image, downsamples=downsamples)  # type: ignore[operator]
        out = tmp_path / f"t{len(downsamples)}"
        tile_slides([path], out, TilingConfig(patch_size=64, magnification=10,
                                              trident_names=True), progress=False)  # fmt: skip
        stem = path.stem
        with h5py.File(out / "patches" / f"{stem}.h5") as f:
            level, size = (
                int(f["coords"].attrs["patch_level"]),
                int(f["coords"].attrs["patch_size"]),
            )
        assert (level, size) == expected
        assert clam_read(path, out / "patches" / f"{stem}.h5", 0).size == (size, size)
        _, t_level, t_size = trident_read(path, out / "patches" / f"{stem}_patches.h5", 0)
        assert (t_level, t_size) == expected
