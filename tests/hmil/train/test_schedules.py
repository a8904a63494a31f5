"""Learning-rate schedules, class balancing, and their agreement with the config's choices."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hmil import config as cfg
from hmil.config import TrainConfig
from hmil.train.balance import epoch_order, inverse_frequency_weights, resolve_class_balance
from hmil.train.schedules import SCHEDULES, make_schedule


def _optimizer(lr: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))], lr=lr)


def _lrs(schedule_name: str, scores: list[float], **kw) -> list[float]:
    opt = _optimizer()
    tc = TrainConfig(epochs=len(scores), lr=1e-3, lr_schedule=schedule_name, **kw)
    sched = make_schedule(opt, tc)
    out = []
    for score in scores:
        out.append(opt.param_groups[0]["lr"])
        sched.step(score)
    return out


def test_config_names_every_schedule():
    assert set(cfg.LR_SCHEDULES) == set(SCHEDULES)


def test_cosine_runs_from_lr_to_the_final_fraction_whatever_the_scores():
    lrs = _lrs("cosine", [0.5] * 11, lr_final_fraction=0.01)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[5] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)  # half way
    assert lrs[10] == pytest.approx(1e-5)
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_cosine_tail_holds_the_lr_then_decays_over_the_last_share_of_the_epochs():
    lrs = _lrs("cosine_tail", [0.5] * 20, lr_final_fraction=0.01, lr_decay_fraction=0.25)
    assert lrs[:15] == [pytest.approx(1e-3)] * 15  # 15 epochs at the full lr
    assert lrs[17] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * 0.6)) / 2)
    assert lrs[19] == pytest.approx(1e-5)
    assert all(a > b for a, b in itertools.pairwise(lrs[14:]))
    eight = _lrs("cosine_tail", [0.5] * 8, lr_decay_fraction=0.25)  # gen-large's 8 epochs
    assert eight[5] == pytest.approx(1e-3) and eight[6] < 1e-3 and eight[7] == pytest.approx(1e-5)


def test_cosine_tail_over_every_epoch_is_cosine_shifted_by_one_epoch():
    tail = _lrs("cosine_tail", [0.5] * 6, lr_decay_fraction=1.0)
    assert tail[0] < 1e-3 and tail[-1] == pytest.approx(1e-5)


def test_lr_decay_fraction_is_validated():
    with pytest.raises(cfg.ConfigError, match=r"train\.lr_decay_fraction"):
        TrainConfig(lr_decay_fraction=0.0)


def test_plateau_collapses_on_a_flat_noisy_score_and_constant_does_not():
    flat = [0.5] * 20
    plateau = _lrs("plateau", flat)
    assert plateau[-1] <= 1e-3 * 0.1**3  # three reductions in 20 flat epochs
    assert _lrs("constant", flat) == [1e-3] * 20


def test_schedule_state_round_trip_continues_exactly():
    opt = _optimizer()
    tc = TrainConfig(epochs=10, lr=1e-3, lr_schedule="cosine")
    a = make_schedule(opt, tc)
    for _ in range(4):
        a.step(0.0)
    opt2 = _optimizer()
    b = make_schedule(opt2, tc)
    b.load_state_dict(a.state_dict())
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_inverse_frequency_weights_keep_the_mean_loss_scale():
    labels = np.array([0] * 30 + [1] * 10 + [3] * 5)
    w = inverse_frequency_weights(labels, 4)
    assert w[2] == 0.0  # absent class
    assert w[labels].mean() == pytest.approx(1.0)
    assert w[0] * 30 == pytest.approx(w[1] * 10) == pytest.approx(w[3] * 5)


def test_sampler_sees_every_class_about_equally_and_is_reproducible():
    labels = np.array([0] * 90 + [1] * 10)
    order = epoch_order(labels, 2, "sampler", torch.Generator().manual_seed(3))
    assert len(order) == 100
    share = np.mean(labels[order] == 1)
    assert 0.35 < share < 0.65  # ~0.5 instead of 0.1
    again = epoch_order(labels, 2, "sampler", torch.Generator().manual_seed(3))
    assert order == again
    plain = epoch_order(labels, 2, "", torch.Generator().manual_seed(3))
    assert sorted(plain) == list(range(100))


@pytest.mark.parametrize("bad", [{"lr_schedule": "step"}, {"class_balance": "oversample"},
                                 {"lr_final_fraction": 2.0}, {"select_metric": "acc"}])  # fmt: skip
def test_train_config_rejects_unknown_choices(bad):
    with pytest.raises(cfg.ConfigError, match=r"train\."):
        TrainConfig(**bad)


def test_supcon_step_normalisation_and_class_weights_scale_the_terms():
    from hmil.hierarchy import Hierarchy
    from hmil.model import HMIL
    from hmil.model.losses import HMILLoss, SupConMemory

    h = Hierarchy.preset("bracs")
    torch.manual_seed(0)
    model = HMIL(8, h.n_coarse, h.n_fine, cfg.ModelConfig(hidden_dim=8, coarse_dim=8, fine_dim=8,
                 coarse_attention_dim=4, fine_attention_dim=4))  # fmt: skip
    out = model(torch.randn(12, 8))
    mapping = torch.from_numpy(h.mapping)
    memory = SupConMemory(4)
    memory.push(model(torch.randn(12, 8)).fine_embeddings, 2)  # a positive
    memory.push(model(torch.randn(12, 8)).fine_embeddings, 5)  # and a negative
    only_supcon = cfg.LossConfig(
        ce_fine=cfg.LossTerm(enabled=False), ce_coarse=cfg.LossTerm(enabled=False),
        bag_align=cfg.LossTerm(enabled=False), inst_align=cfg.LossTerm(enabled=False),
        schedule="constant", beta=0.0,
    )  # fmt: skip
    bag = HMILLoss(only_supcon, mapping)(out, 2, 0, 10, memory).total
    step_cfg = cfg.LossConfig(**{**only_supcon.__dict__, "supcon_normalisation": "step"})
    step = HMILLoss(step_cfg, mapping, bags_per_step=8)(out, 2, 0, 10, memory).total
    assert float(step) == pytest.approx(float(bag) / 8)
    only_ce = cfg.LossConfig(
        ce_coarse=cfg.LossTerm(enabled=False), bag_align=cfg.LossTerm(enabled=False),
        inst_align=cfg.LossTerm(enabled=False), supcon=cfg.LossTerm(enabled=False),
    )  # fmt: skip
    plain = HMILLoss(only_ce, mapping)(out, 2, 0, 10).total
    weights = torch.linspace(0.5, 2.0, h.n_fine)
    weighted = HMILLoss(only_ce, mapping, fine_weights=weights)(out, 2, 0, 10).total
    assert float(weighted) == pytest.approx(float(plain) * float(weights[2]))
    assert math.isfinite(float(bag)) and float(bag) > 0


def test_auto_balance_samples_only_an_imbalanced_training_part():
    bracs = np.repeat(np.arange(7), (43, 147, 73, 41, 48, 61, 132))
    mode, note = resolve_class_balance("auto", bracs, 7)
    assert mode == "sampler"
    assert note.startswith("class balance: auto → sampler") and "147 … 41" in note
    stratified = np.repeat(np.arange(7), (21, 20, 21, 20, 21, 21, 20))  # a balanced cohort's split
    assert resolve_class_balance("auto", stratified, 7)[0] == "none"
    assert resolve_class_balance("auto", np.array([0, 0, 1, 1, 1]), 3)[0] == "sampler"  # class 2: 0
    assert resolve_class_balance("auto", np.repeat([0, 1], (4, 2)), 2)[0] == "sampler"  # 4/2 ≥ 2
    assert resolve_class_balance("auto", np.repeat([0, 1], (5, 3)), 2)[0] == "none"  # the demo's
    for explicit in ("none", "sampler", "loss"):
        assert resolve_class_balance(explicit, bracs, 7)[0] == explicit


def test_auto_on_a_balanced_part_draws_the_same_epochs_as_none():
    labels = np.repeat(np.arange(4), 10)
    mode, _ = resolve_class_balance("auto", labels, 4)
    a = epoch_order(labels, 4, mode, torch.Generator().manual_seed(5))
    b = epoch_order(labels, 4, "none", torch.Generator().manual_seed(5))
    assert a == b and sorted(a) == list(range(40))
