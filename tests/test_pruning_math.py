"""Hard-concrete gates, deterministic gates and size accounting against brute force."""
import pytest
import torch

from raysearch.pruning import EncoderShape, GateSet, exact_remaining, hard_concrete
from raysearch.exported import export_classifier
from raysearch.pruning.surgery import count_prunable_params
from raysearch.pruning.masked_encoder import GatedEncoder
from raysearch.remote_code.pruned_structure import ClassificationHead
from raysearch.transfer.joint import Branch


def test_keep_probability_matches_sampling():
    torch.manual_seed(0)
    log_alpha = torch.linspace(-4, 4, 9).repeat(20000, 1)
    empirical = (hard_concrete.sample(log_alpha) > 0).float().mean(0)
    assert torch.allclose(empirical, hard_concrete.keep_probability(log_alpha[0]), atol=0.01)


def test_samples_hit_exact_zero_and_one():
    z = hard_concrete.sample(torch.zeros(10000))
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()


def test_deterministic_keeps_expected_count_ranked_by_score():
    torch.manual_seed(1)
    log_alpha = torch.randn(5, 12) * 3
    z = hard_concrete.deterministic(log_alpha)
    expected = torch.round(hard_concrete.keep_probability(log_alpha).sum(-1)).long()
    for row in range(5):
        kept = (z[row] > 0).nonzero().flatten()
        assert len(kept) <= expected[row]  # a kept unit can still have a 0 noise-free value
        top = torch.argsort(log_alpha[row], descending=True)[: expected[row]]
        assert set(kept.tolist()) <= set(top.tolist())
    # with confident scores, kept == expected count exactly
    confident = torch.tensor([[5.0, -5.0, 5.0, 5.0, -5.0, 4.0]])
    assert (hard_concrete.deterministic(confident) > 0).sum() == 4


def _randomize(gates: GateSet, seed: int, spread: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gates.log_alpha.values():
            p.copy_(torch.randn(p.shape, generator=generator) * spread + 1.0)


def test_full_count_equals_linear_parameters(tiny_backbone):
    shape = EncoderShape.from_hf_config(tiny_backbone.config)
    assert shape.full_prunable_params == count_prunable_params(tiny_backbone)


@pytest.mark.parametrize("seed", range(4))
def test_exact_count_equals_parameters_of_exported_model(tiny_backbone, seed):
    shape = EncoderShape.from_hf_config(tiny_backbone.config)
    gates = GateSet(shape)
    _randomize(gates, seed)
    branch = Branch(GatedEncoder(tiny_backbone, gates), ClassificationHead(shape.hidden_size, 2), "classification")
    z = gates.deterministic()
    exported, _ = export_classifier(branch, z)
    assert exact_remaining(shape, z) == count_prunable_params(exported.backbone)


def test_expected_count_matches_monte_carlo_of_brute_force_counts(tiny_backbone):
    """E[remaining] from keep probabilities == mean exact count over sampled structures."""
    torch.manual_seed(0)
    shape = EncoderShape.from_hf_config(tiny_backbone.config)
    gates = GateSet(shape)
    _randomize(gates, 7, spread=1.5)
    counts = torch.tensor([float(exact_remaining(shape, gates.sample())) for _ in range(3000)])
    expected = gates.expected_remaining().item()
    assert abs(counts.mean().item() - expected) / shape.full_prunable_params < 0.01
    # and the figure moves: an all-kept structure is the full model
    with torch.no_grad():
        for p in gates.log_alpha.values():
            p.fill_(10.0)
    assert abs(gates.expected_remaining().item() - shape.full_prunable_params) / shape.full_prunable_params < 1e-3


@pytest.mark.parametrize("seed", range(6))
def test_deterministic_structure_matches_expected_size(tiny_backbone, seed):
    """Coarse structures round to whole blocks; FFN units absorb it, so exact ~= expected."""
    shape = EncoderShape.from_hf_config(tiny_backbone.config)
    gates = GateSet(shape)
    _randomize(gates, seed, spread=1.5)
    with torch.no_grad():
        gates.log_alpha["mha"][0] = 0.0  # an undecided whole block: the case rounding gets wrong
        gates.log_alpha["ffn"][1] = 0.3
    exact = exact_remaining(shape, gates.deterministic())
    expected = gates.expected_remaining().item()
    assert abs(exact - expected) <= 3 * shape.hidden_size + 1  # one FFN unit (2D+1), plus a block bias (D) it may drop
