import functools
import itertools

import torch

from chargen.config import ModelConfig
from chargen.model import (
    CharRNN,
    Dropout,
    detach_state,
    keep_mask,
    keep_state_where,
    map_state,
    mask_state,
    thinned,
)
from chargen.steppers import CellStepper, GemmStepper, NumpyStepper


def _parts(state: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def _model(cell: str = "lstm", **kw) -> CharRNN:
    torch.manual_seed(0)
    settings = {"vocab_size": 20, "embed": 8, "hidden": 16, "layers": 2, "dropout": 0.0, **kw}
    return CharRNN(ModelConfig(cell=cell, **settings))


def test_shapes_for_every_cell() -> None:
    x = torch.randint(0, 20, (7, 3))  # (T, B)
    for cell in ("lstm", "gru", "rnn"):
        logits, state = _model(cell)(x)
        assert logits.shape == (7, 3, 20)
        h = state[0] if isinstance(state, tuple) else state
        assert h.shape == (2, 3, 16)


def test_carrying_the_state_equals_one_long_pass() -> None:
    model = _model().eval()
    x = torch.randint(0, 20, (12, 2))
    whole, _ = model(x)
    first, state = model(x[:5])
    second, _ = model(x[5:], detach_state(state))
    assert torch.allclose(torch.cat([first, second]), whole, atol=1e-6)
    fresh, _ = model(x[5:])
    assert not torch.allclose(second, fresh, atol=1e-3)  # the carried state really matters


def test_detached_state_has_no_graph() -> None:
    model = _model()
    _, state = model(torch.randint(0, 20, (4, 2)))
    assert all(s.grad_fn is not None for s in state)
    assert all(s.grad_fn is None and not s.requires_grad for s in detach_state(state))


def test_mask_state_zeroes_only_the_chosen_streams() -> None:
    model = _model("gru")
    _, state = model(torch.randint(0, 20, (4, 3)))
    masked = mask_state(state, torch.tensor([1.0, 0.0, 1.0]))
    assert masked[:, 1].abs().sum() == 0 and torch.equal(masked[:, 0], state[:, 0])


def test_state_helpers_treat_an_lstm_pair_and_a_tensor_alike() -> None:
    lstm, gru = _model(), _model("gru")
    pair = lstm(torch.randint(0, 20, (4, 3)))[1]
    h = gru(torch.randint(0, 20, (4, 3)))[1]
    zeros = lstm.init_state(3)
    # map_state pairs h with h and c with c, across several states
    negated = map_state(torch.sub, zeros, pair)
    assert isinstance(negated, tuple) and all(torch.equal(n, -p) for n, p in zip(negated, pair, strict=True))
    assert torch.equal(map_state(torch.neg, h), -h)
    # keep_state_where picks whole states without asking the host, in fp32
    kept = keep_state_where(torch.tensor(False), pair, zeros)
    assert all(torch.equal(k, z) and k.dtype == torch.float32 for k, z in zip(kept, zeros, strict=True))
    masked = mask_state(pair, torch.tensor([0.0, 1.0, 1.0]))
    assert all(
        m[:, 0].abs().sum() == 0 and torch.equal(m[:, 1:], p[:, 1:])
        for m, p in zip(masked, pair, strict=True)
    )


def test_lstm_starts_from_torchs_own_initialisation_and_tied_weights_are_shared() -> None:
    # No forget-gate bias of 1 any more (it cost 0.05-0.1 nats/char in short runs): every bias is
    # torch's uniform draw in [-1/sqrt(hidden), 1/sqrt(hidden)], the forget gates' included.
    model = _model()
    bound = 1 / 16**0.5
    for name, bias in model.rnn.named_parameters():
        if name.startswith("bias"):
            assert bias.abs().max() <= bound, name
    tied = CharRNN(ModelConfig(vocab_size=20, embed=16, hidden=16, layers=2, dropout=0.0, tie_weights=True))
    assert tied.head.weight is tied.embed.weight


def test_one_step_equals_the_fused_module() -> None:
    for cell in ("lstm", "gru", "rnn"):
        model = _model(cell).eval()
        x = torch.randint(0, 20, (6, 3))
        with torch.no_grad():
            _, state = model(x[:5])
            expected, expected_state = model(x[5:6], state)
            stepper = CellStepper(model, state)
            stepped, stepped_state = stepper(x[5]), stepper.state()
        assert torch.allclose(stepped, expected[0], atol=1e-5)
        for a, b in zip(
            stepped_state if cell == "lstm" else [stepped_state],
            expected_state if cell == "lstm" else [expected_state],
            strict=True,
        ):
            assert torch.allclose(a, b, atol=1e-5)


def test_the_stepper_walks_a_sequence_as_the_fused_module_reads_it() -> None:
    for cell in ("lstm", "gru", "rnn"):
        model = _model(cell).eval()
        x = torch.randint(0, 20, (6, 3))
        with torch.no_grad():
            expected, expected_state = model(x)  # (6, 3, V) in one call
            stepper = CellStepper(model, model.init_state(3))
            for t in range(6):
                assert torch.allclose(stepper(x[t]), expected[t], atol=1e-5), (cell, t)
            got = stepper.state()
        pairs = zip(got, expected_state, strict=True) if cell == "lstm" else [(got, expected_state)]
        for a, b in pairs:
            assert torch.allclose(a, b, atol=1e-5), cell


def test_the_gemm_and_numpy_steppers_walk_a_sequence_as_the_fused_module_reads_it() -> None:
    kinds = (GemmStepper, functools.partial(GemmStepper, rows=True), NumpyStepper)
    for (layers, streams), kind in itertools.product(((1, 1), (2, 3), (3, 2)), kinds):
        torch.manual_seed(layers)
        config = ModelConfig(vocab_size=20, embed=8, hidden=16, layers=layers, dropout=0.0)
        model = CharRNN(config).eval()
        x = torch.randint(0, 20, (9, streams))
        with torch.no_grad():
            _, start = model(x[:3])  # a state that is not zero
            expected, expected_state = model(x[3:], start)
            stepper = kind(model, start)
            for t in range(6):
                assert torch.allclose(stepper(x[3 + t]), expected[t], atol=1e-5), (kind, layers, t)
            got = stepper.state()
            for a, b in zip(got, expected_state, strict=True):
                assert torch.allclose(a, b, atol=1e-5), layers
            stepper.load(start)  # back to the start: the same steps again
            assert torch.allclose(stepper(x[3]), expected[0], atol=1e-5)
            kept = got[0].clone()
            stepper(x[4])
        assert torch.equal(got[0], kept)  # state() is a copy: stepping on leaves it be


def test_dropout_keeps_each_entry_with_probability_one_minus_p_scaled_in_training_only() -> None:
    drop = Dropout(0.3)
    x = torch.ones(200_000)
    torch.manual_seed(0)
    out = drop(x)
    kept = out != 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.005
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert not torch.equal(drop(x), out)  # a fresh mask each call
    drop.eval()
    assert drop(x) is x
    assert torch.equal(thinned(torch.arange(5.0), 0.0), torch.arange(5.0))


def test_keep_mask_keeps_every_entry_alike_and_independently() -> None:
    # On a CPU four entries share one 64-bit draw: each of the four places must keep 1 - p of its
    # entries (a draw whose top bit were never set would keep every fourth entry always), and
    # neighbours, in one draw or in two, must be kept independently.
    torch.manual_seed(0)
    for p in (0.1, 0.3, 0.5):
        keep = keep_mask(torch.Size([100_000, 4]), p, torch.device("cpu")).float()
        for place in range(4):
            assert abs(float(keep[:, place].mean()) - (1 - p)) < 0.01, (p, place)
        flat = keep.flatten()
        for gap in (1, 3, 4, 5):
            both = float((flat[:-gap] * flat[gap:]).mean())
            assert abs(both - (1 - p) ** 2) < 0.01, (p, gap)
    odd = keep_mask(torch.Size([3, 7]), 0.2, torch.device("cpu"))  # entries not a multiple of four
    assert odd.shape == (3, 7) and odd.dtype == torch.bool
    assert bool(keep_mask(torch.Size([1000]), 0.0, torch.device("cpu")).all())


def test_thinned_gives_the_product_in_fp32_and_its_gradient_through_the_kept_entries() -> None:
    x = torch.randn(64, 16, requires_grad=True)
    torch.manual_seed(3)
    out = thinned(x, 0.25)
    kept = out != 0
    assert torch.equal(out[kept], x[kept] * (1 / 0.75))  # one rounding, as x * (1 / (1 - p))
    out.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.75)
    assert thinned(torch.ones(8, dtype=torch.bfloat16), 0.5).dtype == torch.float32


def test_training_with_dropout_runs_the_layers_one_call_each_as_the_fused_module() -> None:
    # On a CPU, a model with dropout trains a layer a call (CharRNN._layer_by_layer). With a dropout
    # that keeps every entry, it must compute what the fused module computes, gradients included,
    # with the same weight-drop masks (drawn first, from the same seed) in the recurrent matrices.
    x = torch.randint(0, 20, (7, 3))
    for cell in ("lstm", "gru", "rnn"):
        for layers in (2, 3):
            model = _model(cell, layers=layers, dropout=0.1, weight_drop=0.3)
            model.drop.p = 0.0
            start = model.init_state(3)
            start = tuple(s + 0.5 for s in start) if isinstance(start, tuple) else start + 0.5
            for given in (None, start):
                results = []
                for between in (0.0, 1e-9):  # the fused module; a layer a call, keeping every entry
                    model.rnn.dropout = between
                    model.zero_grad()
                    torch.manual_seed(7)
                    logits, state = model(x, given)
                    logits.sum().backward()
                    results.append((logits, _parts(state), [p.grad.clone() for p in model.parameters()]))
                (fused, fused_state, fused_grads), (split, split_state, split_grads) = results
                assert torch.allclose(split, fused, atol=1e-6), (cell, layers)
                for a, b in zip(split_state, fused_state, strict=True):
                    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6), (cell, layers)
                for a, b in zip(split_grads, fused_grads, strict=True):
                    assert torch.allclose(a, b, atol=1e-5), (cell, layers)


def test_dropout_between_layers_thins_what_the_next_layer_reads_in_training_only() -> None:
    model = _model(dropout=0.5, weight_drop=0.0)
    x = torch.randint(0, 20, (6, 3))
    _, (h1, c1) = model(x)
    _, (h2, c2) = model(x)
    assert torch.equal(h1[0], h2[0]) and torch.equal(c1[0], c2[0])  # the first layer reads the embedding
    assert not torch.allclose(h1[1], h2[1])  # the second reads a fresh mask of the first's output
    model.eval()
    _, (h3, _) = model(x)
    _, (h4, _) = model(x)
    assert torch.equal(h3, h4)


def test_weight_drop_thins_the_recurrent_matrices_in_training_only() -> None:
    model = _model(weight_drop=0.5)
    x = torch.randint(0, 20, (6, 3))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    first, _ = model(x)
    second, _ = model(x)
    assert not torch.allclose(first, second)  # a fresh mask each call
    first.sum().backward()
    assert all(float(model.rnn.get_parameter(f"weight_hh_l{k}").grad.abs().sum()) > 0 for k in range(2))
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # masks leave weights be
    model.eval()
    plain = _model(weight_drop=0.0).eval()  # the same weights (seed 0), no weight drop at all
    assert torch.equal(model(x)[0], model(x)[0]) and torch.allclose(model(x)[0], plain(x)[0])


def test_the_weight_drop_is_the_dropout_unless_given() -> None:
    assert ModelConfig(dropout=0.3).recurrent_drop == 0.3
    assert ModelConfig(dropout=0.3, weight_drop=0.0).recurrent_drop == 0.0
    assert _model("gru", weight_drop=None).weight_drop == 0.0  # _model's dropout is 0
    # a run stored before weight drop existed trained without it, whatever its dropout
    stored = ModelConfig(dropout=0.25, layers=2, hidden=16).to_dict()
    del stored["weight_drop"]
    assert ModelConfig.from_dict(stored).recurrent_drop == 0.0
    assert ModelConfig.from_dict({**stored, "weight_drop": None}).recurrent_drop == 0.25
