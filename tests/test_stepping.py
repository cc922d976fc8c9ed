"""Generation's CPU settings: measured once per machine, shape and batch, remembered, and put back."""

import dataclasses
import json
import warnings

import pytest
import torch

from chargen import stepping
from chargen.config import ModelConfig, SampleConfig
from chargen.model import CharRNN
from chargen.paths import chargen_home
from chargen.sample import sample_batch
from chargen.vocab import Vocab


def _model(hidden: int = 24) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=12, embed=8, hidden=hidden, layers=2, dropout=0.0))


def test_the_choice_is_measured_at_its_first_uses_keeping_the_best_rates_then_read_back() -> None:
    model = _model(hidden=28)
    chosen = stepping.choose(model, 1, "cpu")
    assert chosen in stepping.candidates(model)
    assert {"gemm", "gemm-rows", "cells"} <= {s.kernel for s in stepping.candidates(model)}  # an LSTM's
    path = chargen_home() / stepping.CACHE_NAME
    key = stepping.cache_key(model, 1)
    entry = json.loads(path.read_text())[key]
    assert entry["measurements"] == 1
    assert len(entry["steps_per_sec"]) == len(stepping.candidates(model))
    assert all(rate > 0 for rate in entry["steps_per_sec"].values())

    # A young entry is measured again, and a candidate keeps the best rate it was ever seen at:
    # plant one far above what any step can do, and it is chosen.
    fast = next(s for s in stepping.candidates(model) if s != chosen)
    data = json.loads(path.read_text())
    data[key]["steps_per_sec"][stepping.label(fast)] = 1e12
    path.write_text(json.dumps(data))
    assert stepping.choose(model, 1, "cpu") == fast
    entry = json.loads(path.read_text())[key]
    assert entry["measurements"] == 2 and entry["steps_per_sec"][stepping.label(fast)] == 1e12
    for _ in range(stepping.MEASUREMENTS - 2):
        stepping.choose(model, 1, "cpu")
    assert json.loads(path.read_text())[key]["measurements"] == stepping.MEASUREMENTS

    # A settled choice is used as it is, without measuring again: plant another one.
    planted = next(s for s in stepping.candidates(model) if s.kernel != fast.kernel)
    data = json.loads(path.read_text())
    data[key]["settings"] = dataclasses.asdict(planted)
    path.write_text(json.dumps(data))
    assert stepping.choose(model, 1, "cpu") == planted

    # But one measured over other candidates than this chargen has (an older chargen's, say, before
    # it could step with NumPy) is measured afresh.
    data = json.loads(path.read_text())
    del data[key]["steps_per_sec"][stepping.label(planted)]
    path.write_text(json.dumps(data))
    stepping.choose(model, 1, "cpu")
    entry = json.loads(path.read_text())[key]
    assert entry["measurements"] == 1 and len(entry["steps_per_sec"]) == len(stepping.candidates(model))


def test_numpy_steps_an_lstm_on_one_blas_thread_then_the_blas_has_its_own_back() -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")  # a dependency: absent only where unset up
    model = _model()
    numpy_options = [s for s in stepping.candidates(model) if s.kernel == "numpy"]
    assert numpy_options == [stepping.StepSettings(1, False, "numpy")]

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before, "NumPy's BLAS is found"
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine
        with stepping.applied(numpy_options[0]):
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == [2] * len(before)
    assert blas_threads() == before


def test_a_gru_steps_with_torchs_cells() -> None:
    torch.manual_seed(0)
    gru = CharRNN(ModelConfig(vocab_size=12, embed=8, hidden=16, layers=2, dropout=0.0, cell="gru"))
    assert {s.kernel for s in stepping.candidates(gru)} == {"cells"}


def test_batches_of_one_size_class_share_an_entry_and_other_shapes_do_not() -> None:
    model = _model()
    assert stepping.cache_key(model, 5) == stepping.cache_key(model, 8)
    assert stepping.cache_key(model, 8) != stepping.cache_key(model, 9)
    assert stepping.cache_key(model, 1) != stepping.cache_key(_model(hidden=32), 1)


def test_a_gpu_needs_no_choice_and_the_settings_are_put_back() -> None:
    assert stepping.choose(_model(), 1, "meta") is None
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    with stepping.applied(stepping.StepSettings(threads=1, onednn=not onednn, kernel="cells")):
        assert torch.get_num_threads() == 1 and torch.backends.mkldnn.enabled != onednn
    assert torch.get_num_threads() == threads and torch.backends.mkldnn.enabled == onednn


def test_an_unreadable_cache_is_measured_again_and_replaced() -> None:
    path = chargen_home() / stepping.CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not json")
    model = _model(hidden=20)
    assert stepping.choose(model, 2, "cpu") in stepping.candidates(model)
    assert stepping.cache_key(model, 2) in json.loads(path.read_text())


def test_the_same_seed_gives_the_same_sample_before_and_after_the_choice_is_remembered() -> None:
    vocab = Vocab.from_text("abcdefghij \n")
    model = _model(hidden=36)
    config = SampleConfig(length=60, seed=3)
    first = sample_batch(model, vocab, config)  # measures
    assert sample_batch(model, vocab, config) == first  # reads the choice back


def _one_thread_each(model: CharRNN) -> list[stepping.StepSettings]:
    """A candidate for each stepper of `model`, on one thread."""
    return list({s.kernel: s for s in stepping.candidates(model) if s.threads == 1}.values())


def _settle(model: CharRNN, streams: int, settings: stepping.StepSettings) -> None:
    """Plant `settings` as the settled choice for `model` and `streams`, measured over every candidate."""
    rates = {stepping.label(s): 1.0 for s in stepping.candidates(model)}
    entry = {
        "settings": dataclasses.asdict(settings),
        "steps_per_sec": rates,
        "measurements": stepping.MEASUREMENTS,
    }
    path = chargen_home() / stepping.CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({stepping.cache_key(model, streams): entry}))


def test_every_stepper_gives_a_seed_the_same_sample_through_sample_batch() -> None:
    vocab = Vocab.from_text("abcdefghij \n")
    model = _model(hidden=40)
    for streams in (1, 3):
        config = SampleConfig(length=80, seed=5, num_samples=streams)
        samples = []
        for settings in _one_thread_each(model):
            _settle(model, streams, settings)
            samples.append(sample_batch(model, vocab, config))
            assert stepping.choose(model, streams, "cpu") == settings  # the planted one was used
        assert len(samples) == len({s.kernel for s in stepping.candidates(model)}) >= 2
        assert all(sample == samples[0] for sample in samples), streams
        assert all(len(text) == 80 for text in samples[0])


def test_a_diverged_models_inf_and_nan_sample_quietly_with_every_stepper() -> None:
    vocab = Vocab.from_text("abcdefghij \n")
    model = _model(hidden=40)
    with torch.no_grad():
        model.head.bias[0], model.head.bias[1] = float("inf"), -float("inf")  # their sum is NaN
    for settings in _one_thread_each(model):
        _settle(model, 1, settings)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # NumPy's RuntimeWarning on the way would fail here
            (text,) = sample_batch(model, vocab, SampleConfig(length=30, seed=2))
        assert text == vocab.decode([0] * 30), settings.kernel  # inf is clamped, and then the top
