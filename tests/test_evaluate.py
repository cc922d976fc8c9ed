import math

import numpy as np
import pytest
import torch

from chargen.checkpoint import load_model_weights, load_run
from chargen.config import ModelConfig
from chargen.device import cpu_computes_bf16, resolve_precision
from chargen.errors import ConfigError, CorpusError
from chargen.evaluate import LossStats, evaluate_ids, evaluate_windows
from chargen.model import CharRNN
from chargen.records import TrainSummary


def test_perplexity_and_bpc_come_from_the_mean_loss() -> None:
    stats = LossStats(chars=10, loss=math.log(8))
    assert stats.perplexity == pytest.approx(8) and stats.bpc == pytest.approx(3)


def test_an_untrained_model_is_about_as_perplexed_as_the_vocabulary_is_large() -> None:
    torch.manual_seed(0)
    vocab_size = 60
    model = CharRNN(ModelConfig(vocab_size=vocab_size, layers=2, hidden=64, embed=16, dropout=0.0))
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


def test_windowed_evaluation_resets_the_state_at_each_window(tiny_run: TrainSummary) -> None:
    run = load_run(tiny_run.run_dir)
    model = load_model_weights(run)
    ids = run.validation_ids()[:1001]
    one_window = evaluate_windows(model, ids, context=1000)
    assert one_window.chars == 1000
    assert one_window.loss == pytest.approx(evaluate_ids(model, ids, max_streams=1).loss, rel=1e-5)
    # Cut into windows of 8, the model forgets what came before each window: a worse loss.
    short = evaluate_windows(model, ids, context=8)
    assert short.chars == 1000 and short.loss > one_window.loss
    with pytest.raises(CorpusError):
        evaluate_windows(model, ids[:8], context=8)


@pytest.mark.skipif(
    not cpu_computes_bf16(), reason="this CPU cannot compute an LSTM in bf16 (oneDNN needs AVX-512)"
)
def test_bf16_evaluation_is_close_to_fp32(tiny_run: TrainSummary) -> None:
    run = load_run(tiny_run.run_dir)
    model = load_model_weights(run)
    ids = run.validation_ids()
    fp32 = evaluate_ids(model, ids)
    bf16 = evaluate_ids(model, ids, autocast=torch.bfloat16)
    assert bf16.chars == fp32.chars and abs(bf16.loss - fp32.loss) < 0.01 * fp32.loss


def test_bf16_is_refused_where_the_cpu_cannot_compute_it_and_a_runs_own_bf16_falls_back(
    tiny_run: TrainSummary,
) -> None:
    """On a CPU without AVX-512 (an AVX2-only AMD EPYC, say) torch's LSTM raises mid-forward under
    bf16 autocast. Asked for, bf16 is then a ConfigError naming `precision`; recorded by a run
    trained on another machine, it computes in fp32, and the run's evaluation runs. Where the CPU
    can compute bf16 (most of the team's machines), both give bf16."""
    cpu = torch.device("cpu")
    if cpu_computes_bf16():
        assert resolve_precision("bf16", cpu) == torch.bfloat16
    else:
        with pytest.raises(ConfigError, match="`precision='fp32'`") as error:
            resolve_precision("bf16", cpu)
        assert error.value.field == "precision"
    recorded = resolve_precision("bf16", cpu, recorded=True)
    run = load_run(tiny_run.run_dir)
    stats = evaluate_ids(load_model_weights(run), run.validation_ids(), autocast=recorded)
    assert stats.chars > 0 and math.isfinite(stats.loss)
