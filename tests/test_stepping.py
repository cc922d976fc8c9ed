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


def test_the_first_choice_is_measured_and_remembered_then_read_back() -> None:
    model = _model(hidden=28)
    chosen = stepping.choose(model, 1, "cpu")
    assert chosen in stepping.candidates()
    path = chargen_home() / stepping.CACHE_NAME
    entry = json.loads(path.read_text())[stepping.cache_key(model, 1)]
    assert len(entry["steps_per_sec"]) == len(stepping.candidates())
    assert all(rate > 0 for rate in entry["steps_per_sec"].values())

    # What is remembered is used as it is, without measuring again: plant another choice.
    planted = stepping.StepSettings(threads=1, onednn=not chosen.onednn)
    data = json.loads(path.read_text())
    data[stepping.cache_key(model, 1)]["settings"] = {"threads": 1, "onednn": planted.onednn}
    path.write_text(json.dumps(data))
    assert stepping.choose(model, 1, "cpu") == planted


def test_batches_of_one_size_class_share_an_entry_and_other_shapes_do_not() -> None:
    model = _model()
    assert stepping.cache_key(model, 5) == stepping.cache_key(model, 8)
    assert stepping.cache_key(model, 8) != stepping.cache_key(model, 9)
    assert stepping.cache_key(model, 1) != stepping.cache_key(_model(hidden=32), 1)


def test_a_gpu_needs_no_choice_and_the_settings_are_put_back() -> None:
    assert stepping.choose(_model(), 1, "meta") is None
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    with stepping.applied(stepping.StepSettings(threads=1, onednn=not onednn)):
        assert torch.get_num_threads() == 1 and torch.backends.mkldnn.enabled != onednn
    assert torch.get_num_threads() == threads and torch.backends.mkldnn.enabled == onednn


def test_an_unreadable_cache_is_measured_again_and_replaced() -> None:
    path = chargen_home() / stepping.CACHE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not json")
    model = _model(hidden=20)
    assert stepping.choose(model, 2, "cpu") in stepping.candidates()
    assert stepping.cache_key(model, 2) in json.loads(path.read_text())


def test_the_same_seed_gives_the_same_sample_before_and_after_the_choice_is_remembered() -> None:
    vocab = Vocab.from_text("abcdefghij \n")
    model = _model(hidden=36)
    config = SampleConfig(length=60, seed=3)
    first = sample_batch(model, vocab, config)  # measures
    assert sample_batch(model, vocab, config) == first  # reads the choice back
