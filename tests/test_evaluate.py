import math

import numpy as np
import pytest
import torch

from chargen.checkpoint import load_model_weights, load_run
from chargen.config import ModelConfig
from chargen.evaluate import LossStats, evaluate_ids
from chargen.loop import TrainSummary
from chargen.model import CharRNN


def test_perplexity_and_bpc_come_from_the_mean_loss() -> None:
    stats = LossStats(chars=10, loss=math.log(8))
    assert stats.perplexity == pytest.approx(8) and stats.bpc == pytest.approx(3)


def test_an_untrained_model_is_about_as_perplexed_as_the_vocabulary_is_large() -> None:
    torch.manual_seed(0)
    vocab_size = 60
    model = CharRNN(ModelConfig(vocab_size=vocab_size, hidden=64, embed=16))
    ids = np.random.default_rng(0).integers(0, vocab_size, 5000).astype(np.uint8)
    stats = evaluate_ids(model, ids)
    assert stats.chars == 4999
    assert 0.9 * vocab_size < stats.perplexity < 1.1 * vocab_size


def test_parallel_streams_match_one_sequential_pass(tiny_run: TrainSummary) -> None:
    run = load_run(tiny_run.run_dir)
    model = load_model_weights(run)
    ids = np.tile(run.validation_ids(), 3)  # long enough for several streams
    parallel = evaluate_ids(model, ids, max_streams=8, warmup=128)
    sequential = evaluate_ids(model, ids, max_streams=1)
    assert parallel.chars == sequential.chars == len(ids) - 1
    assert abs(parallel.loss - sequential.loss) / sequential.loss < 0.005
