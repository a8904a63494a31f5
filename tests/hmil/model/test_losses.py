"""Each loss term against a value computed by hand on a tiny input."""

import math

import pytest
import torch

from hmil.config import LossConfig, LossTerm
from hmil.model import HMILOutput
from hmil.model.losses import (
    HMILLoss,
    SupConMemory,
    bag_alignment_loss,
    curriculum_beta,
    instance_alignment_loss,
    supcon_loss,
    supcon_temperature,
)

# fine 0, 1 under coarse 0; fine 2 under coarse 1
M = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


def test_bag_alignment_is_nll_of_summed_fine_probabilities():
    logits = torch.tensor([0.0, math.log(2.0), 0.0])  # softmax = [1/4, 1/2, 1/4]
    # coarse probs = [3/4, 1/4]
    assert bag_alignment_loss(logits, torch.tensor(1), M).item() == pytest.approx(math.log(4))
    assert bag_alignment_loss(logits, torch.tensor(0), M).item() == pytest.approx(-math.log(0.75))


def test_bag_alignment_stays_finite_for_extreme_logits():
    logits = torch.tensor([[200.0, 0.0, -200.0]])
    value = bag_alignment_loss(logits, torch.tensor([1]), M)
    assert math.isfinite(value.item()) and value.item() == pytest.approx(400.0, rel=1e-4)


def test_instance_alignment_cosine_over_classes():
    a_c = torch.tensor([[0.5, 0.5], [0.5, 0.5]])  # (Kc, N)
    a_f = torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]])  # M^T a_f = identity
    expected = 1 - 1 / math.sqrt(2)
    assert instance_alignment_loss(a_c, a_f, M).item() == pytest.approx(expected, abs=1e-6)
    aligned = M.T @ a_f
    assert instance_alignment_loss(aligned, a_f, M).item() == pytest.approx(0.0, abs=1e-6)


def test_instance_alignment_is_scale_free_for_tiny_attention():
    a_f = torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]) * 1e-7  # attention of huge bags
    a_c = torch.tensor([[0.5, 0.5], [0.5, 0.5]]) * 1e-7
    assert instance_alignment_loss(a_c, a_f, M).item() == pytest.approx(1 - 1 / math.sqrt(2))


def test_supcon_hand_computed():
    z = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])  # (B=3, V=1, F=2)
    labels = torch.tensor([0, 0, 1])
    # anchors 0 and 1: positive similarity 1, negative 0 -> -log(e / (e + 1)); anchor 2: none
    expected = math.log(1 + math.e) - 1
    assert supcon_loss(z, labels, temperature=1.0).item() == pytest.approx(expected, abs=1e-6)


def test_supcon_memory_adds_contrasts_and_positives():
    z = torch.tensor([[[0.0, 1.0]]])
    mem = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])
    value = supcon_loss(z, torch.tensor([1]), 1.0, mem, torch.tensor([1, 0]))
    assert value.item() == pytest.approx(-(1 - math.log(math.e + 1)), abs=1e-6)
    assert supcon_loss(z, torch.tensor([1]), 1.0).item() == 0.0  # no positive at all


def test_supcon_temperature_scales_logits():
    z = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])
    labels = torch.tensor([0, 0, 1])
    expected = math.log(1 + math.exp(-2.0))  # -log(e^2 / (e^2 + e^0)) at tau = 0.5
    assert supcon_loss(z, labels, temperature=0.5).item() == pytest.approx(expected, rel=1e-5)


def test_curriculum_and_temperature_schedules():
    assert curriculum_beta(0, 10, "linear") == 1.0
    assert curriculum_beta(5, 10, "linear") == pytest.approx(0.5)
    assert curriculum_beta(5, 10, "quadratic") == pytest.approx(0.75)
    assert curriculum_beta(7, 10, "constant", 0.3) == 0.3
    assert supcon_temperature(0, 10, 0.1, "cosine") == pytest.approx(1.0)
    assert supcon_temperature(5, 10, 0.1, "cosine") == pytest.approx(0.1)
    assert supcon_temperature(3, 10, 0.2, "constant") == 0.2


def _output():
    return HMILOutput(
        coarse_logits=torch.tensor([0.0, 0.0]),
        fine_logits=torch.tensor([0.0, math.log(2.0), 0.0]),
        coarse_attention=torch.tensor([[0.5, 0.5], [0.5, 0.5]]),
        fine_attention=torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]),
        fine_embeddings=torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0], [0, 1]])),
    )


def test_combined_loss_follows_the_project_default_formula():
    loss = HMILLoss(LossConfig(), M)
    result = loss(_output(), fine_target=2, epoch=5, epochs=10)  # beta = 0.5
    ce_f = math.log(4)  # p(fine 2) = 1/4
    ce_c = math.log(2)  # uniform coarse head
    ba = math.log(4)
    ia = 1 - 1 / math.sqrt(2)
    con = result.terms["supcon"].item()
    expected = ce_f + 0.5 * (ce_c + ba + ia) + 0.5 * con
    assert result.beta == 0.5
    assert result.terms["ce_fine"].item() == pytest.approx(ce_f, abs=1e-6)
    assert result.terms["ce_coarse"].item() == pytest.approx(ce_c, abs=1e-6)
    assert result.total.item() == pytest.approx(expected, abs=1e-5)


def test_disabled_terms_and_released_code_variant():
    cfg = LossConfig(
        bag_align=LossTerm(curriculum="none"),
        inst_align=LossTerm(enabled=False),
        supcon=LossTerm(enabled=False, curriculum="contrastive"),
        schedule="quadratic",
    )
    result = HMILLoss(cfg, M)(_output(), fine_target=2, epoch=5, epochs=10)  # alpha = 0.75
    assert set(result.terms) == {"ce_fine", "ce_coarse", "bag_align"}
    expected = math.log(4) + 0.75 * math.log(2) + math.log(4)
    assert result.total.item() == pytest.approx(expected, abs=1e-5)


def test_memory_is_bounded_fifo():
    memory = SupConMemory(2)
    for label in range(3):
        memory.push(torch.full((3, 2), float(label)), label)
    feats, labels = memory.tensors(torch.device("cpu"))
    assert feats.shape == (2, 3, 2) and labels.tolist() == [1, 2]
    memory.clear()
    assert memory.tensors(torch.device("cpu")) == (None, None)


def test_supcon_on_the_true_row_uses_one_view_per_bag():
    """``supcon_views: true``: the bag's own class row against the memory bags' own rows."""
    from hmil.model.losses import SupConMemory

    torch.manual_seed(0)
    out = _output()
    memory = SupConMemory(4)
    mem_positive = torch.nn.functional.normalize(torch.randn(3, 2), dim=1)  # (Kf, F)
    mem_negative = torch.nn.functional.normalize(torch.randn(3, 2), dim=1)
    memory.push(mem_positive, 2)
    memory.push(mem_negative, 1)
    only = LossConfig(
        ce_fine=LossTerm(enabled=False), ce_coarse=LossTerm(enabled=False),
        bag_align=LossTerm(enabled=False), inst_align=LossTerm(enabled=False),
        schedule="constant", beta=0.0, supcon_views="true",
    )  # fmt: skip
    got = HMILLoss(only, M)(out, fine_target=2, epoch=0, epochs=10, memory=memory).total
    anchor = out.fine_embeddings[2]
    logits = torch.stack([anchor @ mem_positive[2], anchor @ mem_negative[1]]) / 0.1
    expected = -(logits[0] - torch.logsumexp(logits, 0))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
