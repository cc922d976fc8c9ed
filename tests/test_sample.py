import pytest
import torch

from chargen.checkpoint import load_model_weights, load_run
from chargen.config import SampleConfig
from chargen.errors import VocabError
from chargen.records import TrainSummary
from chargen.sample import Picker, filter_logits, sample_batch, sample_stream


@pytest.fixture(scope="module")
def loaded(tiny_run: TrainSummary):
    run = load_run(tiny_run.run_dir)
    return load_model_weights(run), run.vocab


def test_the_same_seed_gives_the_same_sample(loaded) -> None:
    model, vocab = loaded
    config = SampleConfig(prefix="The ", length=80, seed=7)
    first = sample_batch(model, vocab, config)
    assert sample_batch(model, vocab, config) == first
    assert "".join(sample_stream(model, vocab, config)) == first[0]
    assert sample_batch(model, vocab, SampleConfig(prefix="The ", length=80, seed=8)) != first


def test_temperature_zero_is_greedy(loaded) -> None:
    model, vocab = loaded
    text = sample_batch(model, vocab, SampleConfig(prefix="The ", length=30, temperature=0, seed=1))[0]
    # Recompute greedily by hand: each generated character must be the argmax after the text so far.
    context = "\n" + "The "
    for char in text:
        ids = torch.from_numpy(vocab.encode(context).astype("int64")).view(-1, 1)
        with torch.no_grad():
            logits, _ = model(ids)
        assert vocab.chars[int(logits[-1, 0].argmax())] == char
        context += char
    top1 = sample_batch(model, vocab, SampleConfig(prefix="The ", length=30, top_k=1, seed=5))[0]
    assert top1 == text


def test_several_samples_come_from_one_batch(loaded) -> None:
    model, vocab = loaded
    texts = sample_batch(model, vocab, SampleConfig(prefix="I ", length=40, num_samples=4, seed=2))
    assert len(texts) == 4 and all(len(t) == 40 for t in texts)
    assert len(set(texts)) > 1


def test_top_k_and_top_p_keep_the_right_characters() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    top_k = filter_logits(logits, 1.0, top_k=2, top_p=1.0)
    assert torch.isfinite(top_k).tolist() == [[True, True, False, False]]
    top_p = filter_logits(logits, 1.0, top_k=None, top_p=0.8)  # 0.5 + 0.3 reaches 0.8
    assert torch.isfinite(top_p).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 1.0, None, 0.1)).tolist() == [[True, False, False, False]]


def test_a_prefix_with_an_unknown_character_is_refused(loaded) -> None:
    model, vocab = loaded
    with pytest.raises(VocabError, match="U\\+1F600") as error:
        sample_batch(model, vocab, SampleConfig(prefix="The 😀", length=5))
    # The library names its own argument; the command line says --prefix (test_cli.py).
    assert str(error.value).startswith("`prefix` has 1 character(s)") and "--" not in str(error.value)


def test_the_gumbel_picker_draws_from_the_tempered_softmax() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20_000, -1)  # 20,000 streams, one step each
    for temperature in (1.0, 0.5):
        config = SampleConfig(temperature=temperature, seed=0)
        picker = Picker(config, torch.Generator().manual_seed(0), 20_000, 4)
        counts = torch.bincount(picker(logits), minlength=4).float() / 20_000
        expected = probs ** (1 / temperature) / (probs ** (1 / temperature)).sum()
        assert torch.allclose(counts, expected, atol=0.012), (temperature, counts, expected)
    top_2 = Picker(SampleConfig(top_k=2, seed=0), torch.Generator().manual_seed(1), 20_000, 4)
    assert set(top_2(logits).tolist()) == {0, 1}
