"""Generation's CPU settings: measured once per machine, shape and batch, remembered, and put back."""

import json

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
    assert {s.kernel for s in stepping.candidates(model)} == {"gemm", "cells"}  # an LSTM has both
    path = chargen_home() / stepping.CACHE_NAME
    key = stepping.cache_key(model, 1)
    entry = json.loads(path.read_text())[key]
    assert entry["measurements"] == 1
    assert len(entry["steps_per_sec"]) == len(stepping.candidates(model))
    assert all(rate > 0 for rate in entry["steps_per_sec"].values())

    # A young entry is measured again, and a candidate keeps the best rate it was ever seen at:
    # plant one far above what any step can do, and it is chosen.
    fast = stepping.StepSettings(threads=1, onednn=not chosen.onednn, kernel=chosen.kernel)
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
    other = "cells" if chosen.kernel == "gemm" else "gemm"
    planted = stepping.StepSettings(threads=1, onednn=chosen.onednn, kernel=other)
    data = json.loads(path.read_text())
    data[key]["settings"] = {"threads": 1, "onednn": planted.onednn, "kernel": other}
    path.write_text(json.dumps(data))
    assert stepping.choose(model, 1, "cpu") == planted


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


def test_both_steppers_give_a_seed_the_same_sample_through_sample_batch() -> None:
    vocab = Vocab.from_text("abcdefghij \n")
    model = _model(hidden=40)
    config = SampleConfig(length=80, seed=5, num_samples=3)
    path = chargen_home() / stepping.CACHE_NAME
    samples = []
    for kernel in ("gemm", "cells"):
        settled = {"threads": 1, "onednn": False, "kernel": kernel}
        entry = {"settings": settled, "measurements": stepping.MEASUREMENTS, "steps_per_sec": {}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({stepping.cache_key(model, 3): entry}))
        samples.append(sample_batch(model, vocab, config))
    assert samples[0] == samples[1] and all(len(text) == 80 for text in samples[0])
