"""Flow-matching math: timestep draws, shifts, loss weights, noisy inputs and 2x2 packing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_image_studio.training import flow_matching as fm

SAMPLINGS = st.sampled_from(fm.SAMPLINGS)
WEIGHTINGS = st.sampled_from(fm.WEIGHTINGS)


@st.composite
def timestep_configs(draw: st.DrawFn) -> fm.TimestepConfig:
    lo = draw(st.integers(0, 998))
    hi = draw(st.integers(lo + 1, 1000))
    return fm.TimestepConfig(
        sampling=draw(SAMPLINGS),
        weighting=draw(WEIGHTINGS),
        discrete_flow_shift=draw(st.floats(1.0, 5.0)),
        sigmoid_scale=draw(st.floats(0.1, 10.0)),
        logit_mean=draw(st.floats(-10.0, 10.0)),
        logit_std=draw(st.floats(0.01, 10.0)),
        mode_scale=draw(st.floats(0.0, 10.0)),
        min_timestep=lo,
        max_timestep=hi,
    )


@settings(max_examples=150, deadline=None)
@given(cfg=timestep_configs(), tokens=st.integers(1, 20000), seed=st.integers(0, 2**31 - 1))
def test_timesteps_stay_in_the_min_max_range(cfg: fm.TimestepConfig, tokens: int, seed: int) -> None:
    t = fm.sample_timesteps(cfg, 64, tokens, torch.Generator().manual_seed(seed))
    assert t.shape == (64,) and t.dtype == torch.float32
    assert bool(torch.isfinite(t).all())
    if cfg.sampling == "sigma":  # the range bounds the schedule index i, t = (1000 - i) / 1000
        lo, hi = (1000 - cfg.max_timestep + 1) / 1000, (1000 - cfg.min_timestep) / 1000
    else:
        lo, hi = cfg.min_timestep / 1000, cfg.max_timestep / 1000
    assert float(t.min()) >= lo - 1e-6
    assert float(t.max()) <= hi + 1e-6


@settings(max_examples=100, deadline=None)
@given(t1=st.floats(0, 1), t2=st.floats(0, 1), k=st.floats(1.0, 10.0))
def test_time_shift_is_monotone_and_moves_towards_noise(t1: float, t2: float, k: float) -> None:
    a, b = sorted((t1, t2))
    sa, sb = (
        fm.time_shift(torch.tensor(a, dtype=torch.float64), k),
        fm.time_shift(torch.tensor(b, dtype=torch.float64), k),
    )
    assert float(sa) <= float(sb) + 1e-12
    assert float(sa) >= a - 1e-12  # k >= 1 never moves a draw towards the clean image
    assert 0.0 <= float(sa) <= 1.0


@settings(max_examples=60, deadline=None)
@given(t=st.floats(0.05, 0.95), k1=st.floats(1.0, 5.0), k2=st.floats(1.0, 5.0))
def test_larger_shift_gives_larger_t(t: float, k1: float, k2: float) -> None:
    lo, hi = sorted((k1, k2))
    x = torch.tensor(t, dtype=torch.float64)
    assert float(fm.time_shift(x, lo)) <= float(fm.time_shift(x, hi)) + 1e-12


def test_time_shift_fixes_the_ends() -> None:
    ends = torch.tensor([0.0, 1.0])
    assert torch.equal(fm.time_shift(ends, 3.0), ends)


def test_qwen_shift_follows_the_pipeline_scheduler() -> None:
    assert fm.qwen_shift_mu(256) == pytest.approx(0.5)
    assert fm.qwen_shift_mu(8192) == pytest.approx(0.9)
    assert math.exp(fm.qwen_shift_mu(4096)) == pytest.approx(2.0, abs=0.01)  # 1024 x 1024 images
    cfg = fm.TimestepConfig(sampling="qwen_shift")
    assert fm.shift_for(cfg, 4096) == pytest.approx(math.exp(fm.qwen_shift_mu(4096)))
    assert fm.shift_for(fm.TimestepConfig(sampling="shift", discrete_flow_shift=2.2), 1) == 2.2
    assert fm.shift_for(fm.TimestepConfig(sampling="uniform"), 4096) is None


def _draw(**kw: object) -> torch.Tensor:
    return fm.sample_timesteps(fm.TimestepConfig(**kw), 20000, 4096, torch.Generator().manual_seed(0))  # type: ignore[arg-type]


def test_each_method_draws_its_distribution() -> None:
    assert float(_draw(sampling="uniform").mean()) == pytest.approx(0.5, abs=0.01)
    assert float(_draw(sampling="sigmoid").median()) == pytest.approx(0.5, abs=0.02)
    shifted = _draw(sampling="shift", discrete_flow_shift=3.0)
    assert float(shifted.median()) == pytest.approx(0.75, abs=0.02)  # the median 0.5 shifted by k=3
    assert float(_draw(sampling="logsnr", logit_mean=-2.0).median()) == pytest.approx(
        1 / (1 + math.exp(-1)), abs=0.02
    )
    narrow = _draw(sampling="uniform", min_timestep=200, max_timestep=300)
    assert float(narrow.min()) >= 0.2 and float(narrow.max()) <= 0.3


def test_sigma_sampling_draws_steps_of_the_reference_schedule() -> None:
    """--timestep_sampling sigma, by the reference's rule: an index i of its 1000-step schedule from the
    weighting's density (uniform without one), t = (1000 - i) / 1000; min/max_timestep bound the index."""
    plain = _draw(sampling="sigma")
    torch.testing.assert_close(plain * 1000, (plain * 1000).round())  # on the schedule's grid
    assert float(plain.min()) >= 0.001 and float(plain.max()) <= 1.0
    assert float(plain.mean()) == pytest.approx(0.5, abs=0.01)
    # logit_normal with mean 2: u leans to 1, so the index is high and t low (median 1 - sigmoid(2))
    late_u = _draw(sampling="sigma", weighting="logit_normal", logit_mean=2.0)
    assert float(late_u.median()) == pytest.approx(1 - 1 / (1 + math.exp(-2.0)), abs=0.01)
    mode = _draw(sampling="sigma", weighting="mode", mode_scale=1.29)
    assert abs(float(mode.mean()) - 0.5) < 0.03 and float(mode.std()) < float(plain.std())
    # the index is in [min_timestep, max_timestep): here t in (1 - 0.3, 1 - 0.2]
    narrow = _draw(sampling="sigma", min_timestep=200, max_timestep=300)
    assert float(narrow.min()) > 0.7 - 1e-6 and float(narrow.max()) <= 0.8 + 1e-6
    # the draw itself, from the same uniform numbers, by the documented rule
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain, (1000 - (u * 1000).floor()) / 1000)


def test_density_weightings_change_only_the_sigma_draw() -> None:
    """With another sampling the reference ignores logit_normal / mode: the same draw, weight 1, a note."""
    for sampling in ("uniform", "sigmoid", "shift", "qwen_shift", "logsnr"):
        for weighting in fm.DENSITY_WEIGHTINGS:
            assert torch.equal(_draw(sampling=sampling, weighting=weighting), _draw(sampling=sampling))
            cfg = fm.TimestepConfig(sampling=sampling, weighting=weighting)
            note = fm.ignored_weighting(cfg)
            assert note is not None and f"--weighting_scheme {weighting}" in note and "sigma" in note
            assert torch.equal(fm.loss_weights(cfg, torch.tensor([0.2, 0.7])), torch.ones(2))
        assert fm.ignored_weighting(fm.TimestepConfig(sampling=sampling, weighting="sigma_sqrt")) is None
    assert fm.ignored_weighting(fm.TimestepConfig(sampling="sigma", weighting="mode")) is None


def test_seeded_draws_repeat() -> None:
    cfg = fm.TimestepConfig(sampling="shift")
    a = fm.sample_timesteps(cfg, 8, 64, torch.Generator().manual_seed(7))
    b = fm.sample_timesteps(cfg, 8, 64, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@settings(max_examples=100, deadline=None)
@given(cfg=timestep_configs(), t=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=16))
def test_loss_weights_are_positive_and_finite(cfg: fm.TimestepConfig, t: list[float]) -> None:
    w = fm.loss_weights(cfg, torch.tensor(t))
    assert w.shape == (len(t),)
    assert bool(torch.isfinite(w).all()) and bool((w > 0).all())


def test_loss_weight_formulas() -> None:
    """The reference's weights: of the schedule sigma nearest its timestep 1000 t + 1 (continuous
    samplings), of t itself for sigma sampling."""
    t = torch.tensor([0.1, 0.5, 0.9])
    sigma = fm.TimestepConfig(sampling="sigma", weighting="sigma_sqrt")
    torch.testing.assert_close(fm.loss_weights(sigma, t), t**-2)
    cosmap = fm.TimestepConfig(sampling="sigma", weighting="cosmap")
    torch.testing.assert_close(fm.loss_weights(cosmap, t), 2 / (math.pi * (1 - 2 * t + 2 * t**2)))
    shift = fm.TimestepConfig(sampling="shift", weighting="sigma_sqrt")
    torch.testing.assert_close(fm.loss_weights(shift, t), (t + 0.001) ** -2)
    odd = torch.tensor([0.0, 0.0004, 0.0006, 0.1234, 0.9996, 1.0])
    nearest = torch.tensor([1, 1, 2, 124, 1000, 1000]) / 1000  # round(1000 t + 1), at most 1000
    torch.testing.assert_close(fm.loss_weights(shift, odd), nearest**-2)
    for scheme in ("none", "logit_normal", "mode"):
        assert torch.equal(fm.loss_weights(fm.TimestepConfig(weighting=scheme), t), torch.ones(3))
    assert float(fm.loss_weights(shift, torch.tensor([0.0]))) == pytest.approx(1e6)
    # the mean weight under uniform sampling: sum over the schedule of sigma^-2 with the ends' half cells
    grid = (torch.arange(1_000_000, dtype=torch.float64) + 0.5) / 1_000_000
    uniform = fm.TimestepConfig(sampling="uniform", weighting="sigma_sqrt")
    k = torch.arange(2, 1001, dtype=torch.float64)
    expected = (0.5 * 1e6 + float((1e6 / k**2).sum()) - 0.5 * 1.0) / 1000
    assert float(fm.loss_weights(uniform, grid).double().mean()) == pytest.approx(expected, rel=1e-3)


def test_noisy_latents_interpolate_and_the_target_is_their_velocity() -> None:
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 16, 1, 4, 6, generator=g), torch.randn(3, 16, 1, 4, 6, generator=g)
    t = torch.tensor([0.0, 0.3, 1.0])
    xt = fm.noisy_latents(x0, noise, t)
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[2], noise[2])
    dt = 1e-3
    step = fm.noisy_latents(x0, noise, t + dt) - xt
    torch.testing.assert_close(step / dt, fm.flow_target(x0, noise), rtol=1e-3, atol=1e-3)


def test_packing_round_trips_and_matches_diffusers() -> None:
    from diffusers import QwenImagePipeline

    latents = torch.randn(2, 16, 1, 6, 10)
    packed = fm.pack_latents(latents)
    assert packed.shape == (2, 15, 64) and fm.image_tokens(6, 10) == 15
    torch.testing.assert_close(fm.unpack_latents(packed, 6, 10), latents)
    theirs = QwenImagePipeline._pack_latents(latents[:, :, 0], 2, 16, 6, 10)
    torch.testing.assert_close(packed, theirs)
    torch.testing.assert_close(QwenImagePipeline._unpack_latents(packed, 6 * 8, 10 * 8, 8), latents)


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="timestep sampling"):
        fm.TimestepConfig(sampling="cosine")
    with pytest.raises(ValueError, match="min_timestep"):
        fm.TimestepConfig(min_timestep=500, max_timestep=500)
