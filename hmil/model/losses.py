"""HMIL's loss terms and the curriculum that shifts weight between them over training.

Every term is a plain function of tensors (unit-tested against hand-computed values);
:class:`HMILLoss` combines them as configured in :class:`hmil.config.LossConfig`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hmil.config import LossConfig
from hmil.model.hmil import HMILOutput


def bag_alignment_loss(
    fine_logits: torch.Tensor, coarse_target: torch.Tensor, mapping: torch.Tensor
) -> torch.Tensor:
    """L_ba = −log (Mᵀ softmax(fine logits))[y_c], averaged over the batch.

    Computed in log space (log-sum-exp of the children's log-probabilities), so it stays finite
    when the summed probability is tiny. The released code fed Mᵀ p_f into a cross-entropy that
    expects logits; this is the intended negative log-likelihood.

    Args:
        fine_logits: ``(B, Kf)`` or ``(Kf,)``.
        coarse_target: ``(B,)`` or scalar coarse class indices.
        mapping: ``(Kf, Kc)`` one-hot fine→coarse matrix M.
    """
    logits = fine_logits.reshape(-1, mapping.shape[0]).float()
    target = coarse_target.reshape(-1)
    log_p_fine = F.log_softmax(logits, dim=-1)  # (B, Kf)
    log_mask = torch.log(mapping.to(logits.device, logits.dtype))  # 0 or -inf, (Kf, Kc)
    log_p_coarse = torch.logsumexp(log_p_fine[:, :, None] + log_mask[None], dim=1)  # (B, Kc)
    return F.nll_loss(log_p_coarse, target)


def instance_alignment_loss(
    coarse_attention: torch.Tensor, fine_attention: torch.Tensor, mapping: torch.Tensor
) -> torch.Tensor:
    """L_ia = mean_n [1 − cos(A_c[:, n], (Mᵀ A_f)[:, n])], cosine over the class axis.

    Args:
        coarse_attention: ``(Kc, N)``.
        fine_attention: ``(Kf, N)``.
        mapping: ``(Kf, Kc)``.
    """
    fine_to_coarse = mapping.to(fine_attention.device, fine_attention.dtype).T @ fine_attention
    a = coarse_attention.float()
    b = fine_to_coarse.float()
    # attention values are ~1/N; normalise by the per-instance max first so eps never dominates
    scale = torch.maximum(a.abs().amax(dim=0), b.abs().amax(dim=0)).clamp_min(1e-30)
    cos = F.cosine_similarity(a / scale, b / scale, dim=0, eps=1e-12)
    return (1.0 - cos).mean()


def supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
    memory_features: torch.Tensor | None = None,
    memory_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "L_out"), with an optional memory.

    Every view of every sample in ``features`` is an anchor. Its contrast set is every other
    view in ``features`` plus all views in the memory; positives are the views with the same
    label. Anchors without any positive are left out; the result is the mean over anchors of
    −mean_{p∈P(a)} log( exp(z_a·z_p/τ) / Σ_{k≠a} exp(z_a·z_k/τ) ). No extra τ/τ_base scaling.

    Args:
        features: ``(B, V, F)`` L2-normalised views (for HMIL: V = Kf class-wise embeddings).
        labels: ``(B,)`` fine labels.
        temperature: τ.
        memory_features: ``(M, V, F)`` detached views of earlier bags, or None.
        memory_labels: ``(M,)``.

    Returns:
        A scalar; 0 (with a graph) when no anchor has a positive.
    """
    b, v, _ = features.shape
    anchors = features.reshape(b * v, -1).float()
    anchor_labels = labels.reshape(b, 1).expand(b, v).reshape(-1)
    contrast, contrast_labels = anchors, anchor_labels
    if memory_features is not None and memory_features.numel() > 0:
        assert memory_labels is not None
        m = memory_features.shape[0]
        mem = memory_features.reshape(m * memory_features.shape[1], -1).to(anchors)
        contrast = torch.cat([anchors, mem], dim=0)
        mem_labels = memory_labels.reshape(m, 1).expand(m, memory_features.shape[1]).reshape(-1)
        contrast_labels = torch.cat([anchor_labels, mem_labels.to(anchor_labels)])
    logits = anchors @ contrast.T / temperature  # (A, C)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(b * v), torch.arange(b * v)] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (anchor_labels[:, None] == contrast_labels[None, :]) & ~self_mask
    n_pos = positive.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return features.sum() * 0.0
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


def curriculum_beta(epoch: int, epochs: int, schedule: str, constant: float = 0.5) -> float:
    """β(e): the weight of the coarse terms at 0-based ``epoch`` of ``epochs``.

    linear: 1 − e/E (paper figure); quadratic: 1 − (e/E)² (released code); constant: β.
    """
    progress = min(max(epoch / max(epochs, 1), 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "quadratic":
        return 1.0 - progress**2
    if schedule == "constant":
        return constant
    raise ValueError(f"unknown schedule '{schedule}'")


def supcon_temperature(epoch: int, epochs: int, base: float, schedule: str) -> float:
    """τ(e): constant ``base``, or the released code's cosine cycle 0.1 + 0.9·(1+cos(2πe/E))/2."""
    if schedule == "cosine":
        return 0.1 + 0.9 * (1.0 + math.cos(2.0 * math.pi * epoch / max(epochs, 1))) / 2.0
    return base


class SupConMemory:
    """Detached class-wise fine embeddings of the most recent bags (a FIFO of ``size`` bags).

    HMIL's contrastive loss needs several slides at once, but bags are forwarded one at a time
    (they have different N and can be huge). The reference keeps the graphs of a whole
    64-slide step in memory; here each bag's anchors are contrasted with the detached views of
    the previous ``size`` bags instead, so memory stays bounded. The trainer empties the memory
    at every epoch start, which keeps resumed runs bit-identical to uninterrupted ones.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: deque[tuple[torch.Tensor, int]] = deque(maxlen=max(size, 1))

    def push(self, embeddings: torch.Tensor, label: int) -> None:
        """Store one bag's ``(Kf, F)`` embeddings."""
        if self.size > 0:
            self._items.append((embeddings.detach(), int(label)))

    def clear(self) -> None:
        self._items.clear()

    def tensors(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(M, Kf, F)`` features and ``(M,)`` labels, or ``(None, None)`` when empty."""
        if not self._items or self.size == 0:
            return None, None
        feats = torch.stack([e for e, _ in self._items]).to(device)
        labels = torch.tensor([y for _, y in self._items], device=device)
        return feats, labels


@dataclass
class LossResult:
    """The total loss and each enabled term's unweighted value (for logging)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    beta: float


class HMILLoss:
    """Combine the configured terms for one bag at a given epoch.

    Args:
        config: which terms, weights, curriculum factors and temperature.
        mapping: ``(Kf, Kc)`` one-hot fine→coarse matrix.
        fine_weights: ``(Kf,)`` per-class factors of the fine cross-entropy (class balancing,
            :mod:`hmil.train.balance`), or None for 1.
        coarse_weights: ``(Kc,)`` the same for the coarse cross-entropy.
        bags_per_step: bags averaged into one optimiser step; with
            ``supcon_normalisation: step`` each bag's SupCon is divided by it.
    """

    def __init__(
        self,
        config: LossConfig,
        mapping: torch.Tensor,
        fine_weights: torch.Tensor | None = None,
        coarse_weights: torch.Tensor | None = None,
        bags_per_step: int = 1,
    ) -> None:
        self.config = config
        self.mapping = mapping.float()
        self.fine_weights = fine_weights
        self.coarse_weights = coarse_weights
        self.supcon_scale = 1.0 / bags_per_step if config.supcon_normalisation == "step" else 1.0

    def __call__(
        self,
        out: HMILOutput,
        fine_target: int,
        epoch: int,
        epochs: int,
        memory: SupConMemory | None = None,
    ) -> LossResult:
        cfg = self.config
        device = out.fine_logits.device
        mapping = self.mapping.to(device)
        y_fine = torch.tensor([fine_target], device=device)
        y_coarse = mapping[fine_target].argmax().reshape(1)
        beta = curriculum_beta(epoch, epochs, cfg.schedule, cfg.beta)
        factor = {"coarse": beta, "contrastive": 1.0 - beta, "none": 1.0}
        fine_w = 1.0 if self.fine_weights is None else float(self.fine_weights[fine_target])
        coarse_w = 1.0 if self.coarse_weights is None else float(self.coarse_weights[y_coarse])
        compute = {
            "ce_fine": lambda: fine_w * F.cross_entropy(out.fine_logits[None].float(), y_fine),
            "ce_coarse": lambda: (
                coarse_w * F.cross_entropy(out.coarse_logits[None].float(), y_coarse)
            ),
            "bag_align": lambda: bag_alignment_loss(out.fine_logits, y_coarse, mapping),
            "inst_align": lambda: instance_alignment_loss(
                out.coarse_attention, out.fine_attention, mapping
            ),
            "supcon": lambda: self._supcon(out, y_fine, epoch, epochs, memory),
        }
        scale = {"supcon": self.supcon_scale}
        total = out.fine_logits.new_zeros(()).float()
        terms: dict[str, torch.Tensor] = {}
        for name, term in cfg.terms().items():
            if not term.enabled:
                continue
            value = compute[name]()
            terms[name] = value.detach()
            weight = term.weight * factor[term.curriculum] * scale.get(name, 1.0)
            if weight != 0.0:
                total = total + weight * value
        return LossResult(total=total, terms=terms, beta=beta)

    def _supcon(
        self,
        out: HMILOutput,
        y_fine: torch.Tensor,
        epoch: int,
        epochs: int,
        memory: SupConMemory | None,
    ) -> torch.Tensor:
        tau = supcon_temperature(
            epoch, epochs, self.config.temperature, self.config.temperature_schedule
        )
        mem_feats, mem_labels = (None, None) if memory is None else memory.tensors(y_fine.device)
        views = out.fine_embeddings[None]  # (1, Kf, F): every class-wise row is a view
        if self.config.supcon_views == "true":  # only the row of each bag's own class
            views = views[:, y_fine]  # (1, 1, F)
            if mem_feats is not None and mem_labels is not None:
                mem_feats = mem_feats[torch.arange(mem_feats.shape[0]), mem_labels][:, None]
        return supcon_loss(views, y_fine, tau, mem_feats, mem_labels)
