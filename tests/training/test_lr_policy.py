"""The learning-rate policies: PlateauLR (warm-up, halving on plateaus: patience, threshold, minimum), CosineLR
(warm-up, decay to a floor), state round trips, and the choice between them by LRSchedulerSettings."""
import json

import numpy as np
import pytest

from mg.training.lr_policy import CosineLR, LRSchedulerSettings, PlateauLR


def _drive(policy, losses):
    return [policy.report_validation(loss) for loss in losses]


def test_linear_warmup_then_constant():
    policy = PlateauLR(1e-3, warmup_steps=4)
    assert [policy.lr_at(s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert PlateauLR(1e-3).lr_at(0) == 1e-3
    with pytest.raises(ValueError, match="step"):
        policy.lr_at(-1)


def test_halves_after_patience_plus_one_bad_validations():
    policy = PlateauLR(1.0, patience=2)
    # improve, improve, then flat: bad #1, #2 tolerated, #3 halves; count restarts; #1..#3 again halves.
    fired = _drive(policy, [3.0, 2.0, 2.0, 2.5, 2.0, 2.2, 2.2, 2.2])
    assert fired == [False, False, False, False, True, False, False, True]
    assert policy.lr_at(100) == 0.25
    assert policy.reductions == 2


def test_improvement_resets_patience():
    policy = PlateauLR(1.0, patience=1)
    fired = _drive(policy, [1.0, 1.0, 0.5, 0.6, 0.4, 0.45, 0.45])
    assert fired == [False, False, False, False, False, False, True]
    assert policy.lr_at(0) == 0.5


def test_threshold_is_relative():
    policy = PlateauLR(1.0, patience=0, threshold=0.1)
    assert policy.report_validation(1.0) is False  # first value always improves on +inf
    assert policy.report_validation(0.95) is True  # 5 % better is not better than 10 %: a plateau
    assert policy.report_validation(0.85) is False  # 15 % better than the best (1.0) improves
    assert policy.lr_at(0) == 0.5


def test_never_below_min_lr_and_reports_no_change_at_the_floor():
    policy = PlateauLR(1.0, patience=0, min_lr=0.3)
    fired = _drive(policy, [1.0, 1.0, 1.0, 1.0, 1.0])
    assert fired == [False, True, True, False, False]
    assert policy.lr_at(0) == 0.3


def test_reduced_level_also_scales_warmup():
    policy = PlateauLR(1.0, warmup_steps=10, patience=0)
    _drive(policy, [1.0, 1.0])
    assert policy.lr_at(4) == pytest.approx(0.25)


def test_matches_torch_reduce_lr_on_plateau_on_random_sequences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    total_reductions = 0
    for trial in range(5):
        patience, threshold, min_lr = int(rng.integers(0, 4)), float(rng.choice([0.0, 1e-4, 0.05])), 0.01
        ours = PlateauLR(1.0, patience=patience, threshold=threshold, min_lr=min_lr)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=patience,
                                                         threshold=threshold, threshold_mode="rel", min_lr=min_lr)
        losses = 1.0 + 0.3 * rng.standard_normal(60).cumsum() * 0.1 + np.linspace(0, -0.5, 60)
        for loss in losses:
            ours.report_validation(loss)
            ref.step(float(loss))
            assert ours.lr_at(0) == pytest.approx(opt.param_groups[0]["lr"]), (trial, loss)
        total_reductions += ours.reductions
    assert total_reductions >= 5  # the sequences really exercise the halving


def test_state_round_trip_through_json_continues_identically():
    losses = [1.0, 0.9, 0.9, 0.95, 0.9, 0.8, 0.85, 0.85]
    straight = PlateauLR(1.0, patience=1)
    expected = _drive(straight, losses)
    first = PlateauLR(1.0, patience=1)
    _drive(first, losses[:4])
    second = PlateauLR(1.0, patience=1)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert expected[:4] + _drive(second, losses[4:]) == expected
    assert second.state_dict() == straight.state_dict()
    with pytest.raises(KeyError, match="level"):
        second.load_state_dict({})
    with pytest.raises(ValueError, match="cosine"):
        second.load_state_dict(CosineLR(1.0, 10).state_dict())


def test_bad_settings_and_losses_are_refused():
    for kwargs, word in (({"base_lr": 0}, "base_lr"), ({"base_lr": 1, "factor": 1.0}, "factor"),
                         ({"base_lr": 1, "min_lr": 2}, "min_lr"), ({"base_lr": 1, "patience": -1}, "patience"),
                         ({"base_lr": 1, "threshold": 1.0}, "threshold")):
        with pytest.raises(ValueError, match=word):
            PlateauLR(**kwargs)
    with pytest.raises(ValueError, match="nan"):
        PlateauLR(1.0).report_validation(float("nan"))


def test_cosine_warms_up_then_decays_to_min_lr_at_the_last_step():
    cosine = CosineLR(1.0, total_steps=101, warmup_steps=10, min_lr=0.1)
    assert [cosine.lr_at(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert cosine.lr_at(55) == pytest.approx(0.55)       # half-way through the decay
    assert cosine.lr_at(100) == pytest.approx(0.1)       # the last step
    assert cosine.lr_at(500) == pytest.approx(0.1)       # a longer resumed run stays at the floor
    assert cosine.report_validation(1.0) is False and cosine.lr_at(55) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="nan"):
        cosine.report_validation(float("nan"))
    fresh = CosineLR(1.0, total_steps=101, warmup_steps=10, min_lr=0.1)
    fresh.load_state_dict(json.loads(json.dumps(cosine.state_dict())))
    assert [fresh.lr_at(s) for s in range(101)] == [cosine.lr_at(s) for s in range(101)]
    with pytest.raises(ValueError, match="plateau"):
        fresh.load_state_dict(PlateauLR(1.0).state_dict())


def test_settings_choose_the_policy_with_the_shared_warmup_and_floor():
    plateau = LRSchedulerSettings(policy="plateau", warmup_steps=4, min_lr=0.25, patience=0).build(1.0, 100)
    cosine = LRSchedulerSettings(policy="cosine", warmup_steps=4, min_lr=0.25).build(1.0, 100)
    assert isinstance(plateau, PlateauLR) and isinstance(cosine, CosineLR)
    assert [plateau.lr_at(s) for s in range(4)] == [cosine.lr_at(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine.lr_at(99) == 0.25
    _drive(plateau, [1.0, 1.0, 1.0, 1.0])
    assert plateau.lr_at(99) == 0.25
    for kwargs, word in (({"policy": "step"}, "policy"), ({"warmup_steps": -1}, "warmup_steps"),
                         ({"min_lr": 2.0}, "min_lr"), ({"policy": "cosine", "min_lr": -1.0}, "min_lr")):
        with pytest.raises(ValueError, match=word):
            LRSchedulerSettings(**kwargs).build(1.0, 100)
