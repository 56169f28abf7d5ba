"""The defining property of each selection strategy, and the foreground variant's empty-prediction case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.ml.synthetic import tiny_params
from worker.ml.network import build_unet
from worker.ml.scoring import (
    MAX_VARIANCE,
    STRATEGIES,
    MCStatistics,
    RunningMoments,
    ScoreResult,
    foreground_variance,
    rank_cases,
    score_case,
    structure_uncertainties,
)


def _structures(u1: float, u2: float) -> ScoreResult:
    return ScoreResult(score=(u1 + u2) / 2, extras={"structure_1": u1, "structure_2": u2})


# Six cases uncertain about structure 1 only, two about structure 2 only: the mean score puts all six
# structure-1 cases first, so top-k by score would never pick a structure-2 case in a batch of 4.
STRATIFIED = [(i, _structures(0.20 - 0.01 * i, 0.01)) for i in range(6)] + [
    (6, _structures(0.01, 0.12)), (7, _structures(0.01, 0.11))]


def test_stratified_batch_covers_every_structure() -> None:
    greedy = rank_cases("stratified_power", STRATIFIED, tiny_params(temperature=0.0), round_index=0)
    assert greedy[:4] == [0, 6, 1, 7]  # round robin: best for structure 1, best for 2, next for 1, ...
    by_score = rank_cases("mc_dropout_variance", STRATIFIED, tiny_params(), round_index=0)
    assert set(by_score[:4]) <= {0, 1, 2, 3, 4, 5}


def test_stratified_sampling_explores_early_and_exploits_late() -> None:
    params = tiny_params(temperature=1.0, temperature_decay=0.5)
    early = {tuple(rank_cases("stratified_power", STRATIFIED, tiny_params(temperature=1.0, seed=s), 0)[:2])
             for s in range(20)}
    assert len(early) > 1  # stochastic at round 0
    late = rank_cases("stratified_power", STRATIFIED, params, round_index=12)  # temperature 1/4096
    assert late[:4] == [0, 6, 1, 7]
    assert rank_cases("stratified_power", STRATIFIED, params, 0) == rank_cases("stratified_power", STRATIFIED,
                                                                                params, 0)  # seeded
    assert sorted(late) == list(range(8))  # a complete order


def _embedded(score: float, embedding: list[float]) -> ScoreResult:
    return ScoreResult(score=score, embedding=np.array(embedding, dtype=np.float32))


def test_coreset_never_takes_two_near_duplicates_when_distinct_cases_exist() -> None:
    results = [
        (0, _embedded(0.9, [1.0, 0.0, 0.0])),
        (1, _embedded(0.8, [1.0, 1e-4, 0.0])),  # a near-copy of case 0
        (2, _embedded(0.7, [0.0, 1.0, 0.0])),
        (3, _embedded(0.6, [0.0, 0.0, 1.0])),
        (4, _embedded(0.1, [0.7, 0.7, 0.0])),
    ]
    params = tiny_params(query_size=1)  # candidates: the 3 most uncertain
    order = rank_cases("coreset", results, params, round_index=0)
    assert order[:2] == [0, 2]
    assert rank_cases("mc_dropout_variance_fg", results, params, 0)[:2] == [0, 1]
    assert sorted(order) == [0, 1, 2, 3, 4]
    wide = rank_cases("coreset", results, tiny_params(query_size=2), 0)
    assert wide == [0, 2, 3, 4, 1]  # the near-duplicate of the first pick comes last


def _stats(mean: torch.Tensor, variance: torch.Tensor) -> MCStatistics:
    moments = RunningMoments()
    moments.update(mean - torch.sqrt(variance))
    moments.update(mean + torch.sqrt(variance))
    return MCStatistics(moments=moments, entropy_sum=torch.zeros(mean.shape[1:]), passes=2)


def test_fg_variant_puts_an_empty_prediction_first_not_last() -> None:
    background = torch.full((3, 4, 4, 4), 0.0, dtype=torch.float64)
    background[0] = 0.9
    background[1:] = 0.05
    empty = _stats(background, torch.full_like(background, 1e-4))
    assert foreground_variance(empty) == MAX_VARIANCE
    found = background.clone()
    found[:, :2] = torch.tensor([0.2, 0.7, 0.1], dtype=torch.float64)[:, None, None, None]
    variance = torch.full_like(found, 1e-4)
    variance[0] = 0.2  # background variance is left out
    assert foreground_variance(_stats(found, variance)) == pytest.approx(1e-4)
    assert structure_uncertainties(_stats(found, variance)) == [pytest.approx(1e-4), MAX_VARIANCE]


def test_score_case_returns_the_deterministic_prediction_and_embedding() -> None:
    params = tiny_params()
    torch.manual_seed(0)
    model = build_unet(3, params)
    image = np.random.default_rng(0).random((20, 24, 16)).astype(np.float32)
    for strategy in ("mc_dropout_variance", "stratified_power", "coreset", "random"):
        result = score_case(model, image, strategy, params, case_key=3, device="cpu")
        assert result.prediction is not None and result.prediction.shape == image.shape
        assert result.prediction.dtype == np.uint8 and result.prediction.max() <= 2
        assert result.embedding is not None and result.embedding.shape == (params.channels[-1],)
    stratified = score_case(model, image, "stratified_power", params, case_key=3, device="cpu")
    assert set(stratified.extras) == {"structure_1", "structure_2"}


def test_registry_holds_the_new_strategies() -> None:
    from worker.ml.params import STRATEGY_NAMES

    assert {"stratified_power", "coreset"} <= set(STRATEGIES)
    assert set(STRATEGY_NAMES) == set(STRATEGIES)  # the torch-free list the API checks names against
    with pytest.raises(ValueError, match="unknown scoring strategy"):
        rank_cases("nope", [], tiny_params(), 0)
