"""Flat MIL peers with a K-way head, and the training loop they share.

Peers (all take one bag ``x (N, D)`` and return :class:`PeerOutput`):

* ``flat_gated`` — :class:`benchmarks.baselines.FlatGatedMIL` (this project's flat gated-attention
  baseline, the quality-bar reference; needs no torchmil); ``flat_gated_kaiming`` — the
  same with HMIL's Kaiming initialisation.
* ``abmil`` — torchmil ``ABMIL(gated=True)`` (Ilse et al. 2018) behind a
  ``Linear(D→512)+ReLU`` feature extractor, att_dim 128 (torchmil's default).
* ``transmil`` — torchmil ``TransMIL`` (Shao et al. 2021): 2 Nyström layers, 4 heads, PPEG,
  att_dim 256 and 64 landmarks (torchmil's defaults are 512 and 256: with bags of a few hundred
  instances 256 landmarks exceed the sequence length, and the 256 × 256 Moore–Penrose
  iterations made one CPU training run take over an hour).
* ``clam_mb`` — :class:`benchmarks.baselines.CLAMMB` (CLAM-MB after CLAM's ``model_clam.py``:
  class-wise gated attention, one bag classifier per class, instance clustering; 0.7·CE +
  0.3·instance loss): the flat peer with class-wise attention, the closest flat relative of HMIL.
* ``dsmil`` — torchmil ``DSMIL`` (Li et al. 2021) with a K-way instance classifier, so each
  class has its own critical instance and attention column, and DSMIL's multi-class bag
  classifier (a linear map of the K class embeddings to K logits, its ``Conv1d(K, K, width)``);
  trained with DSMIL's 0.5·bag CE + 0.5·CE of the max-instance logits.
* ``clam_sb`` — torchmil ``CLAM_SB`` (Lu et al. 2021), CLAM's "small" sizes (``Linear(D→512)``,
  gate 256, gated), k_sample 8, cross-entropy instance loss (CLAM's default) with one instance
  classifier per class and CLAM's subtyping rule (out-of-class instance loss for every other
  class), total loss 0.7·CE + 0.3·instance loss as in CLAM.

torchmil's models have a single-logit head (binary MIL only); each adapter replaces the head by
``Linear(·→K)`` and uses cross-entropy over the K fine classes. torchmil is imported only when
one of its peers is built (it is a ``bench`` extra, not a dependency of ``hmil``).

:func:`train_peer` trains a peer through ``hmil train``'s own fold loop
(:func:`hmil.train.loop.train_fold` with a :class:`PeerTrainee`), so HMIL and the peers share
one recipe code path: seeding, bag order, gradient accumulation, class balancing, learning-rate
schedule, weight average and selection. :data:`RECIPES` picks the options: ``plain`` (the
peers' own: cosine schedule, no class balancing, no weight average) or ``hmil`` (the HMIL
defaults' recipe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.baselines import CLAMMB, FlatGatedMIL, FlatMILConfig
from hmil.checkpoint import CheckpointInfo
from hmil.config import Config
from hmil.data.labels import read_labels
from hmil.data.splits import Split
from hmil.hierarchy import Hierarchy
from hmil.io import atomic_path
from hmil.model.losses import LossResult, SupConMemory
from hmil.train.cohort import BagStore, CohortItem
from hmil.train.loop import FoldResult, train_fold
from hmil.train.runs import fold_paths
from hmil.train.trainee import Objective


@dataclass
class PeerOutput:
    """One bag through a flat peer.

    Attributes:
        logits: ``(K,)`` fine-class logits.
        attention: ``(N,)`` the model's instance attention (used for localisation AUROC); for
            models with class-wise attention, set per bag by :func:`predict_peer` to the true
            class's row.
        aux_loss: an extra training loss the model defines (CLAM's instance loss), or None.
        class_attention: ``(K, N)`` one attention map per class (CLAM-MB, DSMIL), or None.
    """

    logits: torch.Tensor
    attention: torch.Tensor
    aux_loss: torch.Tensor | None = None
    class_attention: torch.Tensor | None = None  # (K, N) for models with one map per class


class Peer(nn.Module):
    """Base class: ``forward(x (N, D), target=None) -> PeerOutput``."""

    name: str = "peer"

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        raise NotImplementedError


class FlatPeer(Peer):
    """:class:`FlatGatedMIL` (CLAM-small sizes) as a peer."""

    name = "flat_gated"

    def __init__(self, in_dim: int, n_classes: int, config: FlatMILConfig | None = None) -> None:
        super().__init__()
        self.model = FlatGatedMIL(in_dim, n_classes, config)

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        out = self.model(x)
        return PeerOutput(logits=out.logits, attention=out.attention[0])


def _projection(in_dim: int, width: int = 512) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, width), nn.ReLU())


class ABMILPeer(Peer):
    """torchmil gated ABMIL with a ``Linear(D→512)+ReLU`` extractor and a K-way head."""

    name = "abmil"

    def __init__(self, in_dim: int, n_classes: int, width: int = 512, att_dim: int = 128):
        super().__init__()
        from torchmil.models import ABMIL

        self.model = ABMIL(
            in_shape=(in_dim,), att_dim=att_dim, gated=True, feat_ext=_projection(in_dim, width)
        )
        self.model.classifier = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        logits, scores = self.model(x[None], return_att=True)  # (1, K), (1, N) pre-softmax
        return PeerOutput(logits=logits[0].float(), attention=torch.softmax(scores[0].float(), 0))


class TransMILPeer(Peer):
    """torchmil TransMIL with a K-way head; attention = CLS row of the last layer."""

    name = "transmil"

    def __init__(self, in_dim: int, n_classes: int, att_dim: int = 256, landmarks: int = 64):
        super().__init__()
        from torchmil.models import TransMIL

        self.model = TransMIL(in_shape=(in_dim,), att_dim=att_dim, n_landmarks=landmarks)
        self.model.classifier = nn.Linear(att_dim, n_classes)

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        logits, attention = self.model(x[None], return_att=True)  # (1, K), (1, N)
        return PeerOutput(logits=logits[0].float(), attention=attention[0].float())


class _InstanceCE(nn.Module):
    """CLAM's default instance loss (cross-entropy), in torchmil's call convention.

    torchmil's ``inst_eval`` passes logits ``(2k, 2)`` and float targets ``(2k, 1)``. CLAM itself
    uses cross-entropy unless ``--inst_loss svm`` is given; torchmil's SmoothTop1SVM also crashed
    here ("size of tensor a (2) must match ... b (3)") once logits grew past its hard-loss
    threshold.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.reshape(-1).long())


class CLAMSBPeer(Peer):
    """torchmil CLAM_SB with a K-way head and one instance classifier per class."""

    name = "clam_sb"
    bag_weight = 0.7

    def __init__(self, in_dim: int, n_classes: int, width: int = 512, k_sample: int = 8):
        super().__init__()
        from torchmil.models import CLAM_SB

        self.model = CLAM_SB(
            in_shape=(in_dim,),
            att_dim=256,
            k_sample=k_sample,
            gated=True,
            feat_ext=_projection(in_dim, width),
        )
        self.model.classifier = nn.Linear(width, n_classes)
        self.model.inst_classifiers = nn.ModuleList([nn.Linear(width, 2) for _ in range(n_classes)])
        self.model.inst_loss_fn = _InstanceCE()
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        logits, scores, emb = self.model(x[None], return_att=True, return_emb=True)
        aux = None
        if target is not None and self.training:
            # CLAM (subtyping): in-class loss for the true class, out-of-class for the others,
            # averaged over the K instance classifiers
            total = logits.new_zeros(())
            for k, classifier in enumerate(self.model.inst_classifiers):
                if k == target:
                    loss, _, _ = self.model.inst_eval(scores[0], emb[0], classifier)
                else:
                    loss, _, _ = self.model.inst_eval_out(scores[0], emb[0], classifier)
                total = total + loss
            aux = total / self.n_classes
        return PeerOutput(
            logits=logits[0].float(), attention=torch.softmax(scores[0].float(), 0), aux_loss=aux
        )


class CLAMMBPeer(Peer):
    """:class:`benchmarks.baselines.CLAMMB` as a peer (0.7·CE + 0.3·instance loss, as CLAM)."""

    name = "clam_mb"
    bag_weight = 0.7

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.model = CLAMMB(in_dim, n_classes)

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        out = self.model(x, target)
        return PeerOutput(logits=out.logits.float(), attention=out.attention[0],
                          aux_loss=out.instance_loss, class_attention=out.attention)  # fmt: skip


class DSMILPeer(Peer):
    """torchmil DSMIL with K critical instances (a K-way instance classifier) and K logits."""

    name = "dsmil"
    bag_weight = 0.5

    def __init__(self, in_dim: int, n_classes: int, width: int = 512, att_dim: int = 128):
        super().__init__()
        from torchmil.models import DSMIL

        self.model = DSMIL(in_shape=(in_dim,), att_dim=att_dim, feat_ext=_projection(in_dim, width))
        self.model.inst_classifier = nn.Linear(width, n_classes)  # one column per class
        # DSMIL's multi-class bag classifier, Conv1d(K, K, kernel_size=width) over the K class
        # embeddings, is a linear map of all of them to K logits: (1, K, width) → (1, K)
        self.model.bag_classifier = nn.Sequential(
            nn.Flatten(1), nn.Linear(n_classes * width, n_classes)
        )

    def forward(self, x: torch.Tensor, target: int | None = None) -> PeerOutput:
        logits, attention, inst = self.model(x[None], return_att=True, return_inst_pred=True)
        # logits (1, K) → (K,); attention (1, N, K) → (K, N); inst (1, N, K)
        bag = logits.reshape(-1).float()
        aux = None
        if target is not None and self.training:  # DSMIL: CE of the max-instance logits too
            max_logits = inst[0].max(dim=0).values.float()
            aux = F.cross_entropy(max_logits[None], torch.tensor([target], device=x.device))
        class_att = attention[0].transpose(0, 1).float()
        return PeerOutput(logits=bag, attention=class_att[0], aux_loss=aux,
                          class_attention=class_att)  # fmt: skip


class FlatKaimingPeer(FlatPeer):
    """The flat baseline with HMIL's initialisation (Kaiming-normal, zero biases)."""

    name = "flat_gated_kaiming"

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__(in_dim, n_classes, FlatMILConfig(init="kaiming"))


PEERS: dict[str, Callable[[int, int], Peer]] = {
    "flat_gated": FlatPeer,
    "flat_gated_kaiming": FlatKaimingPeer,
    "abmil": ABMILPeer,
    "transmil": TransMILPeer,
    "clam_sb": CLAMSBPeer,
    "clam_mb": CLAMMBPeer,
    "dsmil": DSMILPeer,
}


def build_peer(name: str, in_dim: int, n_classes: int) -> Peer:
    """The peer ``name`` (one of :data:`PEERS`) for D = ``in_dim`` and K = ``n_classes``."""
    if name not in PEERS:
        raise ValueError(f"unknown peer '{name}' (known: {', '.join(PEERS)})")
    return PEERS[name](in_dim, n_classes)


@dataclass
class BagItem:
    """One labelled bag held in memory.

    Attributes:
        slide_id: bag id.
        features: ``(N, D)`` float32.
        fine: fine class index.
        key_mask: ``(N,)`` bool ground-truth key instances, or None.
    """

    slide_id: str
    features: torch.Tensor
    fine: int
    key_mask: np.ndarray | None = None


@dataclass
class TrainSettings:
    """The budget shared by HMIL and the peers (epochs, lr, seed) and the peers' plain recipe
    (the rest: :data:`RECIPES` ``plain``), in ``hmil.config.TrainConfig`` names."""

    epochs: int = 20
    lr: float = 1e-4
    weight_decay: float = 0.0
    bags_per_step: int = 1
    lr_schedule: str = "cosine"
    lr_final_fraction: float = 0.01
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    class_balance: str = "none"
    seed: int = 0


def _plain_recipe(settings: TrainSettings) -> dict[str, Any]:
    """The peers' own recipe: :class:`TrainSettings` as given, no weight average."""
    train = {f"train.{k}": v for k, v in dataclasses.asdict(settings).items()}
    return {**train, "train.ema_epochs": 0.0, "train.ema_decay": 0.0}


def _hmil_recipe(settings: TrainSettings) -> dict[str, Any]:
    """The HMIL defaults' recipe (``hmil train`` with no config: its schedule, weight average
    horizon, class balancing and selection) with the shared budget."""
    return {"train.epochs": settings.epochs, "train.lr": settings.lr, "train.seed": settings.seed}


#: the recipe a peer trains under: dotted ``train.*`` overrides of the run config, on top of
#: the project's defaults (:class:`hmil.config.Config`)
RECIPES: dict[str, Callable[[TrainSettings], dict[str, Any]]] = {
    "plain": _plain_recipe,
    "hmil": _hmil_recipe,
}


def recipe_overrides(recipe: str, settings: TrainSettings) -> dict[str, Any]:
    """The ``train.*`` overrides of recipe ``recipe`` (one of :data:`RECIPES`)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe '{recipe}' (known: {', '.join(RECIPES)})")
    return RECIPES[recipe](settings)


def peer_loss(
    out: PeerOutput, target: int, class_weight: float = 1.0, bag_weight: float = 0.5
) -> torch.Tensor:
    """Cross-entropy over the K classes (× the class-balancing weight), + the model's
    auxiliary loss (CLAM's instance loss, DSMIL's max-instance CE) weighted 1 − ``bag_weight``."""
    target_t = torch.tensor([target], device=out.logits.device)
    ce = class_weight * F.cross_entropy(out.logits[None], target_t)
    if out.aux_loss is None:
        return ce
    return bag_weight * ce + (1.0 - bag_weight) * out.aux_loss


@dataclass
class _PeerObjective:
    """:func:`peer_loss` as the fold loop's objective (the SupCon memory is not used)."""

    fine_weights: torch.Tensor | None
    bag_weight: float

    def __call__(self, out: Any, target: int, epoch: int, memory: SupConMemory) -> LossResult:
        weight = 1.0 if self.fine_weights is None else float(self.fine_weights[target])
        total = peer_loss(out, target, weight, self.bag_weight)
        return LossResult(total=total, terms={"peer": total.detach()}, beta=0.0)


@dataclass
class PeerTrainee:
    """A flat peer as a :class:`hmil.train.trainee.Trainee`: trained by HMIL's own fold loop
    (:func:`hmil.train.loop.train_fold`), so it gets every recipe option HMIL has.

    Flat peers have no coarse head (the coarse level is Mᵀ p_f); the selected weights are kept
    as a plain state dict.
    """

    name: str
    n_classes: int
    in_dim: int = 0  # set by build

    def build(self, in_dim: int) -> torch.nn.Module:
        self.in_dim = in_dim
        return build_peer(self.name, in_dim, self.n_classes)

    def forward(self, model: torch.nn.Module, bag: torch.Tensor, target: int) -> Any:
        return model(bag, target=target)

    def objective(
        self, fine_weights: torch.Tensor | None, coarse_weights: torch.Tensor | None
    ) -> Objective:
        return _PeerObjective(fine_weights, float(getattr(PEERS[self.name], "bag_weight", 0.5)))

    @torch.no_grad()
    def predict(
        self,
        model: torch.nn.Module,
        items: list[CohortItem],
        store: BagStore,
        device: torch.device,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        model.eval()
        probs = [
            torch.softmax(model(store.get(it.path).to(device)).logits.float(), -1).cpu()
            for it in items
        ]
        if not probs:
            return np.zeros((0, self.n_classes)), None
        return torch.stack(probs).double().numpy(), None

    def save(self, path: Path, model: torch.nn.Module, info: CheckpointInfo) -> None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save({"peer": self.name, "epoch": info.epoch, "state_dict": state}, tmp)

    def load(self, path: Path) -> torch.nn.Module:
        model = build_peer(self.name, self.in_dim, self.n_classes)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        return model


def train_peer(
    name: str,
    config: Config,
    hierarchy: Hierarchy,
    split: Split,
    run_dir: Path,
) -> tuple[Peer, FoldResult]:
    """Train peer ``name`` on the run config's cohort (its ``data.*``) and ``split`` with the
    fold loop of ``hmil train`` under ``config.train``; the selected weights, in eval mode.

    Fold 0's files (metrics, checkpoint, test metrics) go to ``run_dir``.
    """
    labels = read_labels(config.data.labels, hierarchy)
    trainee = PeerTrainee(name, hierarchy.n_fine)
    result = train_fold(config, hierarchy, labels, split, 0, run_dir, verbose=False,
                        trainee=trainee)  # fmt: skip
    model = trainee.load(fold_paths(run_dir, 0).checkpoint)
    model.eval()
    assert isinstance(model, Peer)
    return model, result


@torch.no_grad()
def predict_peer(model: Peer, items: list[BagItem]) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(S, K)`` fine probabilities and each bag's ``(N,)`` attention."""
    probs, attention, _ = predict_peer_maps(model, items)
    return probs, attention


@torch.no_grad()
def predict_peer_maps(
    model: Peer, items: list[BagItem]
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray | None]]:
    """Like :func:`predict_peer`, plus each bag's ``(K, N)`` class-wise attention (or None).

    For class-wise models the ``(N,)`` attention returned is the row of the bag's true class.
    """
    model.eval()
    probs, attention, maps = [], [], []
    for item in items:
        out = model(item.features)
        probs.append(torch.softmax(out.logits.float(), -1).double().numpy())
        if out.class_attention is not None:
            rows = out.class_attention.float().numpy()
            maps.append(rows)
            attention.append(rows[item.fine])
        else:
            maps.append(None)
            attention.append(out.attention.float().numpy())
    return np.stack(probs), attention, maps
