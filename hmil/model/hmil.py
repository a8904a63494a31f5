"""HMIL: a coarse and a fine branch with class-wise gated attention, tied by alignment losses.

Architecture (docs/method.md, reference sizes; all configurable)::

    x (N, D) ─ Linear(D→256) ─ ReLU ─ Linear(256→1024) ─▶ h_c (N, 1024)
    h_c ─ Linear(1024→256) ─▶ h_f (N, 256)                # the fine branch cascades from coarse
    A_c = softmax_N(gated_attention_c(h_c))  (Kc, N)      B_c = A_c h_c  (Kc, 1024)
    A_f = softmax_N(gated_attention_f(h_f))  (Kf, N)      B_f = A_f h_f  (Kf, 256)
    coarse logits = Linear(1024→1)(B_c) per row (Kc,)     fine logits = Linear(256→1)(B_f) (Kf,)
    (one Linear shared by all rows, as the paper; ``model.head: per_class`` gives one per class,
    see :mod:`hmil.model.heads` for why)

Decisions the method leaves open, made here:
* dropout (when enabled) sits after the re-embedding MLP's ReLU and on the gated hidden units;
* the fine bag embeddings returned for the contrastive loss are the rows of B_f, L2-normalised;
* attention softmax is computed in float32 even under bf16 autocast (exact maps for the viewer);
* initialisation is ``model.init`` (:mod:`hmil.model.init`; the reference Kaiming-normal start
  was measured to be a poor one).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hmil.config import ModelConfig
from hmil.model.attention import ClassWiseGatedAttention, OnlinePool, attention_pool
from hmil.model.heads import HEADS, PerClassHead
from hmil.model.init import initialise

#: CPU inference forwards bags larger than this in blocks of this many instances (exact online
#: softmax pooling). Each block's activations stay ≤ 16 MB, so the allocator reuses freed memory
#: instead of mapping (and page-faulting) fresh pages for every N×1024 intermediate: about 2×
#: faster at N ≥ 10k on CPU, with outputs equal to the one-shot forward up to float rounding.
CPU_INFERENCE_BLOCK = 4096


@dataclass
class HMILOutput:
    """Everything one forward pass of one bag produces.

    Attributes:
        coarse_logits: ``(Kc,)``.
        fine_logits: ``(Kf,)``.
        coarse_attention: ``(Kc, N)``, each row a distribution over the instances.
        fine_attention: ``(Kf, N)``.
        fine_embeddings: ``(Kf, fine_dim)`` L2-normalised class-wise fine bag embeddings.
    """

    coarse_logits: torch.Tensor
    fine_logits: torch.Tensor
    coarse_attention: torch.Tensor
    fine_attention: torch.Tensor
    fine_embeddings: torch.Tensor


class HMIL(nn.Module):
    """Hierarchical MIL for any input dimension and any two-level hierarchy.

    Args:
        in_dim: D, the instance feature size.
        n_coarse: Kc.
        n_fine: Kf.
        config: layer sizes and dropout.
    """

    def __init__(
        self, in_dim: int, n_coarse: int, n_fine: int, config: ModelConfig | None = None
    ) -> None:
        super().__init__()
        cfg = config or ModelConfig()
        self.in_dim = in_dim
        self.n_coarse = n_coarse
        self.n_fine = n_fine
        self.config = cfg
        drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.embed = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.ReLU(),
            drop,
            nn.Linear(cfg.hidden_dim, cfg.coarse_dim),
        )
        self.to_fine = nn.Linear(cfg.coarse_dim, cfg.fine_dim)
        self.coarse_attention = ClassWiseGatedAttention(
            cfg.coarse_dim, cfg.coarse_attention_dim, n_coarse, cfg.dropout
        )
        self.fine_attention = ClassWiseGatedAttention(
            cfg.fine_dim, cfg.fine_attention_dim, n_fine, cfg.dropout
        )
        self.coarse_head = HEADS[cfg.head](cfg.coarse_dim, n_coarse)
        self.fine_head = HEADS[cfg.head](cfg.fine_dim, n_fine)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every Linear layer and head with ``config.init`` (:mod:`hmil.model.init`)."""
        scheme = self.config.init
        for module in self.modules():
            if isinstance(module, nn.Linear):
                initialise(module.weight, module.bias, scheme)
            elif isinstance(module, PerClassHead):
                initialise(module.weight, module.bias, scheme, per_row=True)

    def instance_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(N, D)`` → ``(h_c (N, coarse_dim), h_f (N, fine_dim))``."""
        if torch.is_grad_enabled() or self.training:
            h_c = self.embed(x)
        else:  # inference: ReLU in place (one N×hidden buffer less)
            first, _, _, second = self.embed
            h_c = second(first(x).relu_())
        return h_c, self.to_fine(h_c)

    def heads(
        self, bag_coarse: torch.Tensor, bag_fine: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scalar heads per class row: ``(Kc, F_c), (Kf, F_f)`` → logits ``(Kc,), (Kf,)``."""
        return self.coarse_head(bag_coarse).float(), self.fine_head(bag_fine).float()

    def forward(self, x: torch.Tensor) -> HMILOutput:
        """One bag.

        Args:
            x: ``(N, D)`` instance features (N ≥ 1).

        Returns:
            :class:`HMILOutput` with logits ``(Kc,)``/``(Kf,)``, attention ``(Kc, N)``/``(Kf, N)``
            and normalised fine embeddings ``(Kf, fine_dim)``.
        """
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected a bag of shape (N, {self.in_dim}), got {tuple(x.shape)}")
        if (
            x.device.type == "cpu"
            and x.shape[0] > CPU_INFERENCE_BLOCK
            and not (torch.is_grad_enabled() or self.training)
        ):
            return self.forward_streaming([x], keep_attention=True)  # in blocks
        h_c, h_f = self.instance_features(x)
        a_c, b_c = attention_pool(self.coarse_attention(h_c), h_c)
        a_f, b_f = attention_pool(self.fine_attention(h_f), h_f)
        coarse_logits, fine_logits = self.heads(b_c, b_f)
        return HMILOutput(
            coarse_logits=coarse_logits,
            fine_logits=fine_logits,
            coarse_attention=a_c,
            fine_attention=a_f,
            fine_embeddings=F.normalize(b_f.float(), dim=-1),
        )

    @torch.no_grad()
    def forward_streaming(
        self, chunks: Iterable[torch.Tensor], keep_attention: bool = True
    ) -> HMILOutput:
        """The same outputs as :meth:`forward`, from a bag given as chunks of instances.

        Instance features are never materialised for the whole bag: each chunk ``(n, D)`` is
        embedded, scored and folded into an :class:`OnlinePool` per level (on CPU in blocks of
        :data:`CPU_INFERENCE_BLOCK` rows), so memory is bounded by one chunk plus K×N raw scores
        (or K×F with ``keep_attention=False``, in which case the returned attention tensors are
        empty ``(K, 0)``).
        """
        coarse_pool = OnlinePool(keep_scores=keep_attention)
        fine_pool = OnlinePool(keep_scores=keep_attention)
        n_seen = 0
        for chunk in chunks:
            if chunk.ndim != 2 or chunk.shape[1] != self.in_dim:
                raise ValueError(f"expected chunks of shape (n, {self.in_dim})")
            if chunk.shape[0] == 0:
                continue
            # on CPU, large chunks are processed in blocks (bounded, reused activation memory)
            blocks = chunk.split(CPU_INFERENCE_BLOCK) if chunk.device.type == "cpu" else (chunk,)
            for block in blocks:
                h_c, h_f = self.instance_features(block)
                coarse_pool.update(self.coarse_attention(h_c), h_c)
                fine_pool.update(self.fine_attention(h_f), h_f)
            n_seen += chunk.shape[0]
        if n_seen == 0:
            raise ValueError("bag has 0 instances")
        b_c, b_f = coarse_pool.pooled(), fine_pool.pooled()
        coarse_logits, fine_logits = self.heads(b_c, b_f)
        device = b_c.device
        return HMILOutput(
            coarse_logits=coarse_logits,
            fine_logits=fine_logits,
            coarse_attention=(
                coarse_pool.attention()
                if keep_attention
                else torch.empty(self.n_coarse, 0, device=device)
            ),
            fine_attention=(
                fine_pool.attention()
                if keep_attention
                else torch.empty(self.n_fine, 0, device=device)
            ),
            fine_embeddings=F.normalize(b_f.float(), dim=-1),
        )

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
