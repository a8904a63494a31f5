"""The fold loop's model seam: HMIL's trainee builds, scores and remembers as the loop expects."""

from __future__ import annotations

import torch

from hmil.config import Config
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.model.losses import SupConMemory
from hmil.train.trainee import HMILTrainee


def test_hmil_trainee_builds_hmil_and_remembers_each_bag(bracs: Hierarchy) -> None:
    trainee = HMILTrainee(Config(), bracs)
    torch.manual_seed(0)
    model = trainee.build(16)
    assert isinstance(model, HMIL)
    objective = trainee.objective(None, None)
    memory = SupConMemory(4)
    bag = torch.randn(9, 16)
    out = trainee.forward(model, bag, 2)
    result = objective(out, 2, epoch=0, memory=memory)
    assert result.total.ndim == 0 and result.total.requires_grad
    feats, labels = memory.tensors(torch.device("cpu"))
    assert feats is not None and labels is not None
    assert feats.shape == (1, bracs.n_fine, out.fine_embeddings.shape[-1])
    assert labels.tolist() == [2]
