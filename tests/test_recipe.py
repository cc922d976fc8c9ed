import torch

from chargen.config import SIZES, ModelConfig, TrainConfig
from chargen.model import CharRNN
from chargen.recipe import (
    CHARS_PER_PARAMETER,
    FINE_TUNE_LR_FACTOR,
    ITEMS_BATCH,
    TEXT_BATCH,
    dropout_for,
    resolve,
    with_batch,
    with_learning_rate,
)

CPU = torch.device("cpu")
VOCAB = 65
TRAIN_CHARS = 1_000_000


def _resolve(model: ModelConfig, config: TrainConfig) -> tuple[ModelConfig, dict]:
    resolved, plan = resolve(model, config, TRAIN_CHARS, CPU, None)
    assert plan is not None
    return resolved, plan.to_dict()


def _parameters(name: str) -> int:
    layers, hidden = SIZES[name]
    return CharRNN(ModelConfig(vocab_size=VOCAB, layers=layers, hidden=hidden, dropout=0.0)).num_parameters()


def test_the_size_grows_with_the_characters_the_run_will_see() -> None:
    per_step = 32 * 32
    chosen = []
    for chars in (100_000, 4_000_000, 100_000_000):
        config = TrainConfig(batch_size=32, bptt=32, max_steps=chars // per_step)
        resolved, plan = _resolve(ModelConfig(vocab_size=VOCAB), config)
        assert plan["chars"] == config.max_steps * per_step and plan["chars_per_sec"] is None
        assert (resolved.layers, resolved.hidden) == SIZES[plan["size"]]
        chosen.append(plan["size"])
    assert chosen == ["small", "medium", "large"]


def test_a_larger_size_needs_enough_characters_per_parameter() -> None:
    just_enough = int(CHARS_PER_PARAMETER * _parameters("medium"))
    for chars, size in ((just_enough + 2048, "medium"), (just_enough - 2048, "small")):
        config = TrainConfig(batch_size=32, bptt=32, max_steps=chars // 1024)
        assert _resolve(ModelConfig(vocab_size=VOCAB), config)[1]["size"] == size


def test_dropout_grows_with_the_passes_and_comes_sooner_for_a_bigger_model() -> None:
    medium, large = _parameters("medium"), _parameters("large")
    assert dropout_for(1, large) == 0.0 and dropout_for(3, medium) == 0.0
    assert dropout_for(4, large) > dropout_for(4, medium)  # the same passes, more to memorise with
    assert 0 < dropout_for(6, medium) < dropout_for(20, medium) < dropout_for(60, medium)
    assert dropout_for(60, medium) <= dropout_for(10_000, medium) == 0.5
    resolved, plan = _resolve(ModelConfig(vocab_size=VOCAB), TrainConfig(batch_size=16, epochs=30))
    assert plan["epochs"] == 30 and resolved.dropout == dropout_for(30, _parameters(plan["size"]))


def test_what_the_user_gives_is_kept() -> None:
    config = TrainConfig(batch_size=32, bptt=32, max_steps=100_000)  # enough for the largest size
    resolved, plan = _resolve(ModelConfig(vocab_size=VOCAB, hidden=100, dropout=0.3), config)
    assert (resolved.layers, resolved.hidden, resolved.dropout) == (2, 100, 0.3)
    assert plan["size"] == "2x100"  # every size's width gave way to the user's
    assert _resolve(ModelConfig(vocab_size=VOCAB, size="small"), config)[0].hidden == SIZES["small"][1]
    given = ModelConfig(vocab_size=VOCAB, layers=1, hidden=8, dropout=0.0)
    assert resolve(given, config, TRAIN_CHARS, CPU, None) == (given, None)  # nothing left to decide


def test_a_time_budget_is_planned_from_measured_speed_without_touching_the_seeded_generators() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    config = TrainConfig(batch_size=4, bptt=16, max_time=1.0)
    resolved, plan = _resolve(ModelConfig(vocab_size=VOCAB, layers=1, hidden=16), config)
    assert plan["chars_per_sec"] > 0 and plan["chars"] == plan["chars_per_sec"] * 1.0
    assert torch.equal(torch.rand(3), expected)
    assert resolved.dropout == dropout_for(plan["epochs"], CharRNN(resolved).num_parameters())


def test_the_planned_rate_falls_with_width_and_rises_with_dropout_for_a_fresh_run_only() -> None:
    def rate(hidden: int, dropout: float, fine_tune: bool = False, given: float | None = None) -> float:
        model = ModelConfig(vocab_size=VOCAB, layers=2, hidden=hidden, dropout=dropout)
        lr = with_learning_rate(TrainConfig(max_steps=1, lr=given), model, fine_tune).lr
        assert lr is not None
        return lr

    assert rate(256, 0.0) == 0.006 and rate(512, 0.0) < rate(384, 0.0) < 0.006  # wider, lower
    assert rate(256, 0.2) == rate(256, 0.45) == 0.008  # a third more from dropout 0.2 up
    assert 0.006 < rate(256, 0.05) < rate(256, 0.1) < 0.008  # and smoothly below it
    assert abs(rate(384, 0.2) - rate(384, 0.0) * 4 / 3) < 1e-5  # the gain is the same at any width
    # A fine-tuned run keeps its own measured factor, dropout or not; a given rate is kept as given.
    assert rate(256, 0.3, fine_tune=True) == rate(256, 0.0, fine_tune=True) == 0.006 * FINE_TUNE_LR_FACTOR
    assert rate(256, 0.3, given=0.001) == 0.001


def test_the_batch_is_planned_for_a_text_and_for_a_list_unless_given() -> None:
    assert with_batch(TrainConfig(max_steps=1), listed=False).batch_size == TEXT_BATCH == 16
    assert with_batch(TrainConfig(max_steps=1), listed=True).batch_size == ITEMS_BATCH == 32
    assert with_batch(TrainConfig(max_steps=1, batch_size=5), listed=True).batch_size == 5
    assert TrainConfig().bptt == 64


def test_a_text_run_and_a_list_run_take_their_planned_batches(tmp_path) -> None:
    from chargen.checkpoint import load_run
    from chargen.config import TextConfig
    from chargen.corpus import load_corpus
    from chargen.training import train

    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"name{i % 50}ab" for i in range(400)), encoding="utf-8")
    small = ModelConfig(layers=1, hidden=8, dropout=0.0)
    for path, items, batch in ((text, None, TEXT_BATCH), (names, "lines", ITEMS_BATCH)):
        corpus = load_corpus(path, TextConfig(items=items))
        out = tmp_path / f"run-{path.stem}"
        train(corpus, small, TrainConfig(max_steps=2, eval_every=2, seed=0), out=out)
        assert load_run(out).train_config.batch_size == batch
