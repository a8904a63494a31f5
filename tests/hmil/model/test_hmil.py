import numpy as np
import pytest
import torch

from hmil.config import LossConfig, ModelConfig
from hmil.hierarchy import Hierarchy
from hmil.model import HMIL
from hmil.model.losses import HMILLoss


@pytest.mark.parametrize(("n_coarse", "n_fine"), [(2, 6), (3, 7), (3, 6)])
@pytest.mark.parametrize("dim", [7, 64])
def test_shapes_for_odd_hierarchies(n_coarse, n_fine, dim):
    torch.manual_seed(0)
    model = HMIL(dim, n_coarse, n_fine)
    out = model(torch.randn(33, dim))
    assert out.coarse_logits.shape == (n_coarse,)
    assert out.fine_logits.shape == (n_fine,)
    assert out.coarse_attention.shape == (n_coarse, 33)
    assert out.fine_attention.shape == (n_fine, 33)
    assert out.fine_embeddings.shape == (n_fine, 256)
    torch.testing.assert_close(out.coarse_attention.sum(1), torch.ones(n_coarse))
    torch.testing.assert_close(out.fine_attention.sum(1), torch.ones(n_fine))
    torch.testing.assert_close(out.fine_embeddings.norm(dim=1), torch.ones(n_fine))


def test_reference_size_and_init():
    model = HMIL(1024, 3, 7, ModelConfig(head="shared", init="kaiming"))
    assert 1.3e6 <= model.n_parameters() <= 1.4e6  # "about 1.3 M parameters at D = 1024"
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.count_nonzero(module.bias) == 0
            std = float(module.weight.std())
            assert std == pytest.approx((2.0 / module.weight.shape[1]) ** 0.5, rel=0.1)


@pytest.mark.parametrize(
    ("scheme", "std_of_fan_in"),
    [
        ("pytorch", lambda fan_in, fan_out: (1.0 / (3 * fan_in)) ** 0.5),  # U(±1/√fan_in)
        ("xavier", lambda fan_in, fan_out: (2.0 / (fan_in + fan_out)) ** 0.5),
        ("kaiming", lambda fan_in, fan_out: (2.0 / fan_in) ** 0.5),
    ],
)
def test_init_schemes_reach_every_linear_layer_and_per_class_head(scheme, std_of_fan_in):
    torch.manual_seed(0)
    model = HMIL(512, 3, 7, ModelConfig(head="per_class", init=scheme))
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for layer in layers:
        fan_out, fan_in = layer.weight.shape
        want = std_of_fan_in(fan_in, fan_out)
        assert float(layer.weight.std()) == pytest.approx(want, rel=0.15), (scheme, layer)
    head = model.coarse_head.weight  # (3, 1024): three Linear(1024→1) rows
    assert float(head.std()) == pytest.approx(std_of_fan_in(head.shape[1], 1), rel=0.15)
    assert (torch.count_nonzero(model.fine_head.bias) == 0) == (scheme != "pytorch")


def test_class_wise_heads_are_shared_scalars():
    model = HMIL(8, 3, 7, ModelConfig(hidden_dim=16, coarse_dim=32, fine_dim=16, head="shared"))
    assert model.coarse_head.weight.shape == (1, 32)
    assert model.fine_head.weight.shape == (1, 16)


def test_per_class_heads_give_each_class_its_own_classifier():
    torch.manual_seed(0)
    cfg = ModelConfig(hidden_dim=16, coarse_dim=32, fine_dim=16, head="per_class")
    model = HMIL(8, 3, 7, cfg)
    assert model.coarse_head.weight.shape == (3, 32)
    assert model.fine_head.weight.shape == (7, 16)
    bags = torch.randn(7, 16)
    expected = torch.stack(
        [bags[k] @ model.fine_head.weight[k] + model.fine_head.bias[k] for k in range(7)]
    )
    torch.testing.assert_close(model.heads(torch.randn(3, 32), bags)[1], expected)
    # 7 + 3 classifiers instead of 2: (Kf − 1)·(16 + 1) + (Kc − 1)·(32 + 1) more parameters
    shared = HMIL(8, 3, 7, ModelConfig(hidden_dim=16, coarse_dim=32, fine_dim=16, head="shared"))
    assert model.n_parameters() - shared.n_parameters() == 6 * 17 + 2 * 33
    out = model(torch.randn(20, 8))
    assert out.fine_logits.shape == (7,) and out.coarse_logits.shape == (3,)


def test_config_accepts_exactly_the_registered_heads_and_inits():
    # the config's choices are read from the registries themselves
    from hmil.config import HEAD_CHOICES, INIT_CHOICES
    from hmil.model.heads import HEADS
    from hmil.model.init import INITS

    assert HEAD_CHOICES.values() == tuple(HEADS) and INIT_CHOICES.values() == tuple(INITS)
    assert [ModelConfig(head=h, init=i).head for h in HEADS for i in INITS][-1] == "per_class"


def test_single_instance_bag_and_wrong_dim():
    model = HMIL(5, 2, 4)
    out = model(torch.randn(1, 5))
    assert torch.allclose(out.fine_attention, torch.ones(4, 1))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        model(torch.randn(3, 6))


@pytest.mark.parametrize("chunk", [1, 97, 1000, 5000])
def test_streaming_forward_equals_in_memory(chunk):
    torch.manual_seed(0)
    model = HMIL(32, 3, 7).eval()
    x = torch.randn(3000, 32) * 3
    with torch.no_grad():
        full = model(x)
        stream = model.forward_streaming(x.split(chunk))
    for name in ("coarse_logits", "fine_logits"):
        a = torch.softmax(getattr(full, name), -1)
        b = torch.softmax(getattr(stream, name), -1)
        assert (a - b).abs().max() <= 1e-5
    assert (full.fine_attention - stream.fine_attention).abs().max() <= 1e-7
    assert (full.coarse_attention - stream.coarse_attention).abs().max() <= 1e-7


def test_streaming_without_attention_keeps_no_scores():
    model = HMIL(4, 2, 3).eval()
    out = model.forward_streaming(iter([torch.randn(10, 4), torch.randn(5, 4)]), False)
    assert out.fine_attention.shape == (3, 0)
    with pytest.raises(ValueError, match="0 instances"):
        model.forward_streaming(iter([torch.zeros(0, 4)]))


@pytest.mark.parametrize("head", ["shared", "per_class"])
def test_gradients_reach_every_parameter(head):
    h = Hierarchy.preset("bracs")
    torch.manual_seed(0)
    model = HMIL(16, 3, 7, ModelConfig(head=head))
    loss = HMILLoss(LossConfig(), torch.from_numpy(h.mapping))
    result = loss(model(torch.randn(20, 16)), fine_target=4, epoch=1, epochs=4)
    result.total.backward()
    # the shared heads' scalar biases shift every logit of a level equally, so softmax-based
    # losses give them zero gradient by construction
    # (per-class biases are not: each shifts one logit)
    invariant = {"coarse_head.bias", "fine_head.bias"} if head == "shared" else set()
    missing = [
        n
        for n, p in model.named_parameters()
        if n not in invariant and (p.grad is None or not p.grad.any())
    ]
    assert not missing
    assert np.isfinite(result.total.item())
