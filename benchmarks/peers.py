"""Flat MIL peers with a K-way head, and the training loop they share.

Peers (all take one bag ``x (N, D)`` and return :class:`PeerOutput`):

* ``flat_gated`` — :class:`hmil.model.baselines.FlatGatedMIL` (this project's flat gated-attention
  baseline, the quality-bar reference; needs no torchmil); ``flat_gated_kaiming`` — the
  same with HMIL's Kaiming initialisation.
* ``abmil`` — torchmil ``ABMIL(gated=True)`` (Ilse et al. 2018) behind a
  ``Linear(D→512)+ReLU`` feature extractor, att_dim 128 (torchmil's default).
* ``transmil`` — torchmil ``TransMIL`` (Shao et al. 2021): 2 Nyström layers, 4 heads, PPEG,
  att_dim 256 and 64 landmarks (torchmil's defaults are 512 and 256: with bags of a few hundred
  instances 256 landmarks exceed the sequence length, and the 256 × 256 Moore–Penrose
  iterations made one CPU training run take over an hour).
* ``clam_mb`` — :class:`hmil.model.baselines.CLAMMB` (CLAM-MB after CLAM's ``model_clam.py``:
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

:func:`train_peer` mirrors ``hmil.train.loop`` so HMIL and the peers get the same budget: Adam,
gradient accumulation over ``bags_per_step`` bags (their losses averaged), bag order drawn from
a generator seeded by (seed, epoch), model selection
on the validation fine macro AUC (ties → lower validation loss), with the same learning-rate
schedule (:mod:`hmil.train.schedules`) and class balancing (:mod:`hmil.train.balance`) code.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hmil.config import TrainConfig
from hmil.model.baselines import CLAMMB, FlatGatedMIL, FlatMILConfig
from hmil.train.balance import epoch_order, inverse_frequency_weights
from hmil.train.metrics import level_metrics
from hmil.train.schedules import make_schedule


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
    """:class:`hmil.model.baselines.CLAMMB` as a peer (0.7·CE + 0.3·instance loss, as CLAM)."""

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
    """The optimisation budget shared by HMIL and the peers (``hmil.config.TrainConfig``)."""

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

    def train_config(self) -> TrainConfig:
        """The same budget as an HMIL ``train:`` section (schedules are built from it)."""
        return TrainConfig(
            epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
            bags_per_step=self.bags_per_step, lr_schedule=self.lr_schedule,
            lr_final_fraction=self.lr_final_fraction, plateau_factor=self.plateau_factor,
            plateau_patience=self.plateau_patience, class_balance=self.class_balance,
            seed=self.seed,
        )  # fmt: skip


@dataclass
class PeerTrainResult:
    """Best epoch and its weights, and one record per epoch."""

    best_epoch: int
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)


def peer_loss(model: Peer, out: PeerOutput, target: int, class_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy over the K classes (× the class-balancing weight), + the model's
    weighted auxiliary loss (CLAM's instance loss, DSMIL's max-instance CE)."""
    target_t = torch.tensor([target], device=out.logits.device)
    ce = class_weight * F.cross_entropy(out.logits[None], target_t)
    if out.aux_loss is None:
        return ce
    weight = getattr(model, "bag_weight", 0.5)
    return weight * ce + (1.0 - weight) * out.aux_loss


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


def _val_score(model: Peer, items: list[BagItem], n_classes: int) -> tuple[float, float]:
    """(selection score = fine macro AUC, falling back to balanced accuracy; val loss)."""
    probs, _ = predict_peer(model, items)
    y = np.array([it.fine for it in items])
    metrics = level_metrics(y, probs, [str(k) for k in range(n_classes)])
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    score = metrics["macro_auc"]
    if not math.isfinite(score):
        score = metrics["balanced_accuracy"]
    return float(score), loss


def train_peer(
    factory: Callable[[], Peer],
    train: list[BagItem],
    val: list[BagItem],
    settings: TrainSettings,
    n_classes: int,
) -> tuple[Peer, PeerTrainResult]:
    """Train a peer built by ``factory`` (after seeding) and load its best validation epoch."""
    torch.manual_seed(settings.seed)
    model = factory()
    config = settings.train_config()
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay, fused=True
    )
    schedule = make_schedule(optimizer, config)
    fine = np.array([it.fine for it in train], dtype=int)
    weights = (
        inverse_frequency_weights(fine, n_classes)
        if settings.class_balance == "loss"
        else np.ones(n_classes)
    )
    sampler = "sampler" if settings.class_balance == "sampler" else ""
    best = (-math.inf, math.inf, -1)
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, Any]] = []
    step = settings.bags_per_step
    for epoch in range(settings.epochs):
        model.train()
        gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        order = epoch_order(fine, n_classes, sampler, gen)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for position, index in enumerate(order):
            group_start = position - position % step
            group_size = min(step, len(order) - group_start)
            item = train[index]
            out = model(item.features, target=item.fine)
            loss = peer_loss(model, out, item.fine, float(weights[item.fine]))
            (loss / group_size).backward()
            loss_sum += float(loss.detach())
            if position == group_start + group_size - 1:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        score, val_loss = _val_score(model, val, n_classes) if val else (-math.inf, math.inf)
        improved = score > best[0] or (score == best[0] and val_loss < best[1]) or best[2] < 0
        if improved:
            best = (score, val_loss, epoch)
            best_state = copy.deepcopy(model.state_dict())
        schedule.step(score if math.isfinite(score) else -val_loss)
        history.append(
            {"epoch": epoch, "loss": loss_sum / max(len(train), 1), "val_score": score,
             "val_loss": val_loss, "best": improved}
        )  # fmt: skip
    model.load_state_dict(best_state)
    model.eval()
    return model, PeerTrainResult(best_epoch=best[2], best_state=best_state, history=history)
