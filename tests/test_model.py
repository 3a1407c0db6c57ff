"""The model's building blocks against the reference's own definitions."""

from __future__ import annotations

import pytest
import torch

from zhuanxie.model import integrate_and_fire, sinusoidal_positions


def reference_cif(hidden: torch.Tensor, alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """funasr's CifPredictorV3 integration (a loop over frames) and its token counts."""
    from funasr.models.bicif_paraformer.cif_predictor import cif

    embeds, _ = cif(hidden, alphas, 1.0)
    return embeds, torch.floor(alphas.sum(-1)).long()


@pytest.mark.parametrize("seed", range(5))
def test_integrate_and_fire_matches_the_reference_loop(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    b, t, d = 3, 80, 16
    hidden = torch.randn(b, t, d, generator=gen)
    alphas = torch.rand(b, t, generator=gen) * 0.6
    lens = torch.tensor([80, 57, 23])
    alphas = alphas * (torch.arange(t)[None] < lens[:, None])
    ours, counts = integrate_and_fire(hidden, alphas, 1.0)
    ref, ref_counts = reference_cif(hidden, alphas)
    assert counts.tolist() == ref_counts.tolist()
    n = int(counts.max())
    for i in range(b):
        k = int(counts[i])
        torch.testing.assert_close(ours[i, :k], ref[i, :k], atol=1e-5, rtol=1e-5)
        assert not ours[i, k:n].any()


def test_integrate_and_fire_drops_the_incomplete_last_token() -> None:
    hidden = torch.ones(1, 3, 2)
    embeds, counts = integrate_and_fire(hidden, torch.tensor([[0.6, 0.6, 0.6]]), 1.0)
    assert counts.tolist() == [1]
    torch.testing.assert_close(embeds, torch.ones(1, 1, 2))


def test_integrate_and_fire_splits_a_frame_across_a_boundary() -> None:
    hidden = torch.tensor([[[1.0], [10.0], [100.0]]])
    embeds, counts = integrate_and_fire(hidden, torch.tensor([[0.5, 1.0, 0.5]]), 1.0)
    # token 0 = 0.5*1 + 0.5*10, token 1 = 0.5*10 + 0.5*100
    assert counts.tolist() == [2]
    torch.testing.assert_close(embeds, torch.tensor([[[5.5], [55.0]]]))


def test_sinusoidal_positions_match_the_reference() -> None:
    from funasr.models.transformer.embedding import SinusoidalPositionEncoder

    x = torch.zeros(1, 37, 560)
    torch.testing.assert_close(
        sinusoidal_positions(37, 560, x.device), SinusoidalPositionEncoder()(x)[0]
    )
