import json
import math
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chargen import checkpoint as ckpt
from chargen.config import ModelConfig, TrainConfig
from chargen.device import cpu_computes_bf16
from chargen.errors import ChargenError
from chargen.model import CharRNN
from chargen.records import TrainSummary
from chargen.runs import evaluate_run
from chargen.schedule import lr_at
from chargen.step import make_optimizer, train_step
from chargen.training import train
from tests.conftest import TINY_MODEL, TINY_TRAIN, corpus_from_text


def test_train_step_detaches_but_carries_the_state() -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=10, embed=8, hidden=16, layers=1, dropout=0.0))
    optimizer = make_optimizer(model, TrainConfig(lr=1e-3))
    x = torch.randint(0, 10, (6, 3))
    y = torch.randint(0, 10, (6, 3))
    state = model.init_state(3)
    for _ in range(3):
        loss, grad_norm, state, taken = train_step(model, optimizer, x, y, state, clip=1.0)
        assert taken
        assert all(s.grad_fn is None for s in state)  # the graph ends at the window edge
        assert all(s.abs().sum() > 0 for s in state)  # ... but the values are not reset
        assert loss.grad_fn is None and grad_norm > 0


@pytest.mark.parametrize("clip", [0.05, 1e6])  # one that clips, one that does not
def test_the_step_clips_as_clip_grad_norm_then_adamw_would(clip: float) -> None:
    """train_step clips inside the fused update (its grad_scale); the weights must come out as a
    separate clip_grad_norm_ followed by torch's plain (for-loop) AdamW leaves them."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=10, embed=8, hidden=16, layers=2, dropout=0.0))
    twin = CharRNN(model.config)
    twin.load_state_dict(model.state_dict())
    config = TrainConfig(lr=1e-2)
    optimizer = make_optimizer(model, config)
    matrices = [p for p in twin.parameters() if p.dim() >= 2]
    vectors = [p for p in twin.parameters() if p.dim() < 2]
    plain = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": config.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.99),
        foreach=False,
    )
    x, y = torch.randint(0, 10, (6, 3)), torch.randint(0, 10, (6, 3))
    state, twin_state = model.init_state(3), twin.init_state(3)
    for _ in range(3):
        _, grad_norm, state, _ = train_step(model, optimizer, x, y, state, clip)
        logits, twin_state = twin(x, twin_state)
        plain.zero_grad()
        (F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / y.numel()).backward()
        twin_norm = torch.nn.utils.clip_grad_norm_(twin.parameters(), clip)
        plain.step()
        twin_state = tuple(s.detach() for s in twin_state)
        assert float(grad_norm) == pytest.approx(float(twin_norm), rel=1e-5)  # the norm before clipping
    if clip < 1:
        assert float(twin_norm) > 2 * clip  # so the case above did clip
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


def test_a_non_finite_step_leaves_weights_optimiser_and_state_alone() -> None:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=10, embed=8, hidden=16, layers=1, dropout=0.0))
    optimizer = make_optimizer(model, TrainConfig(lr=1e-3))
    x, y = torch.randint(0, 10, (6, 3)), torch.randint(0, 10, (6, 3))
    state = train_step(model, optimizer, x, y, model.init_state(3), clip=1.0)[2]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {i: {k: v.clone() for k, v in m.items()} for i, m in optimizer.state_dict()["state"].items()}
    with torch.no_grad():
        model.head.bias[0] = float("nan")  # poisons the loss and every gradient
    weights["head.bias"] = model.head.bias.clone()
    _, _, kept, taken = train_step(model, optimizer, x, y, state, clip=1.0)
    assert not bool(taken)
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights[name]) or name == "head.bias", name
    assert torch.isnan(model.head.bias[0]) and torch.equal(model.head.bias[1:], weights["head.bias"][1:])
    for i, m in optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, moments[i][k]) for k, v in m.items())  # step count included
    assert all(torch.equal(a, b) for a, b in zip(kept, state, strict=True))


@pytest.mark.skipif(
    not cpu_computes_bf16(), reason="this CPU cannot compute an LSTM in bf16 (oneDNN needs AVX-512)"
)
def test_a_bf16_step_trains_fp32_weights_as_well_as_fp32_does() -> None:
    x, y = torch.randint(0, 10, (6, 3)), torch.randint(0, 10, (6, 3))
    finals = {}
    for autocast in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = CharRNN(ModelConfig(vocab_size=10, embed=8, hidden=16, layers=2, dropout=0.0))
        optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
        state = model.init_state(3)
        for _ in range(30):
            loss, _, state, taken = train_step(model, optimizer, x, y, state, 1.0, autocast=autocast)
            assert bool(taken)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert all(s.dtype == torch.float32 for s in state)  # carried in fp32 whatever the arithmetic
        finals[autocast] = float(loss)
    assert finals[None] < 0.8 * math.log(10) * y.numel()  # fp32 learns the window...
    assert abs(finals[torch.bfloat16] - finals[None]) < 0.05 * finals[None]  # ... and bf16 as well


def test_learning_rate_warms_up_then_decays_to_the_floor() -> None:
    config = TrainConfig(lr=1e-2, min_lr_ratio=0.1, max_steps=100)
    assert lr_at(config, 0, 0.0, warmup_steps=10) == pytest.approx(1e-3)
    assert lr_at(config, 9, 0.09, warmup_steps=10) < 1e-2
    assert lr_at(config, 50, 0.5, warmup_steps=10) == pytest.approx(0.55e-2)
    assert lr_at(config, 100, 1.0, warmup_steps=10) == pytest.approx(1e-3)


def test_a_run_directory_holds_everything(tiny_run: TrainSummary) -> None:
    run_dir = tiny_run.run_dir
    expected = (
        ckpt.RUN_JSON,
        ckpt.VOCAB_JSON,
        ckpt.BEST,
        ckpt.CHECKPOINT,
        ckpt.METRICS,
        ckpt.SUMMARY,
        ckpt.VALID,
    )
    for name in expected:
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / ckpt.METRICS).read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [30, 60]
    assert all({"loss", "perplexity", "bpc", "chars"} <= r.keys() for r in evals)
    steps = [r for r in records if r["kind"] == "train"]
    assert all(math.isfinite(r["grad_norm"]) for r in steps)
    assert tiny_run.steps == 60 and tiny_run.stopped_by == "max_steps"


def test_training_lowers_the_validation_loss(tiny_run: TrainSummary) -> None:
    records = [json.loads(line) for line in (tiny_run.run_dir / ckpt.METRICS).read_text().splitlines()]
    vocab_size = len(json.loads((tiny_run.run_dir / ckpt.VOCAB_JSON).read_text())["chars"])
    assert tiny_run.best.loss < math.log(vocab_size) - 0.8  # well below a uniform guess
    assert records[0]["loss"] > records[-2]["loss"]  # training loss fell too


def test_eval_reproduces_the_recorded_best_figure(tiny_run: TrainSummary) -> None:
    stats = evaluate_run(tiny_run.run_dir, device="cpu")
    assert stats.chars == tiny_run.best.chars
    assert abs(stats.bpc - tiny_run.best.bpc) < 1e-4


def test_the_same_seed_trains_the_same_weights(lamp_text: str, tmp_path: Path) -> None:
    small = corpus_from_text(tmp_path, lamp_text[:20_000])
    config = TrainConfig(batch_size=4, bptt=16, max_steps=8, eval_every=8, seed=3)
    a = train(small, TINY_MODEL, config, out=tmp_path / "a")
    b = train(small, TINY_MODEL, config, out=tmp_path / "b")
    assert a.best.loss == b.best.loss
    assert (tmp_path / "a" / ckpt.BEST).read_bytes() == (tmp_path / "b" / ckpt.BEST).read_bytes()


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    tiny = corpus_from_text(tmp_path, "too short a text " * 3)
    with pytest.raises(ChargenError, match="lower `batch_size` or `bptt`"):
        train(tiny, TINY_MODEL, TINY_TRAIN, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_default_run_directory_and_latest_link(lamp_text: str, tmp_path: Path) -> None:
    small = corpus_from_text(tmp_path, lamp_text[:20_000], "lamp")
    config = TrainConfig(batch_size=4, bptt=16, max_steps=2, eval_every=2, seed=0)
    summary = train(small, TINY_MODEL, config, runs_root=tmp_path / "runs")
    assert summary.run_dir.parent == tmp_path / "runs" and summary.run_dir.name.startswith("lamp-")
    assert (tmp_path / "runs" / "latest").resolve() == summary.run_dir.resolve()
    assert np.isfinite(summary.best.loss)


def test_patience_stops_a_run_whose_validation_loss_stopped_improving(lamp_text: str, tmp_path: Path) -> None:
    from chargen.training import resume

    small = corpus_from_text(tmp_path, lamp_text[:20_000])
    # So small a learning rate that the weights do not change at all in fp32: every evaluation after
    # the first gives the same loss, which is not a new best.
    frozen = TrainConfig(
        batch_size=4, bptt=16, lr=1e-30, max_steps=100, eval_every=5, patience=3, seed=0, precision="fp32"
    )
    summary = train(small, TINY_MODEL, frozen, out=tmp_path / "run")
    assert summary.stopped_by == "patience" and summary.steps == 20 and summary.best_step == 5
    with pytest.raises(ChargenError, match=r"give a larger `patience` \(or 0\)"):
        resume(tmp_path / "run")
    resumed = resume(tmp_path / "run", settings={"patience": 0})  # 0: never stop early
    assert resumed.stopped_by == "max_steps" and resumed.steps == 100 and resumed.best_step == 5


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="keep_freed_memory tunes glibc's malloc; this C library is another",
)
def test_keeping_freed_memory_ends_the_page_faults_of_every_step() -> None:
    """In a fresh process (the setting is for good): with glibc's mmap threshold at its starting
    128 KiB, a 2x256 LSTM's forward and backward touch thousands of fresh pages every step, and next
    to none once freed memory is kept. The threshold is pinned for the comparison because glibc's
    own adaptation may raise it after some frees, which it did within ten steps in three processes
    of sixteen on the team's AMD EPYC. Medians of eight steps, since single steps stray: with freed
    memory kept, about one step in sixteen still faulted 250 to 275 pages there (the mean of three
    steps that this test took before once came out at 873 against 8,189)."""
    code = """
import ctypes, resource, statistics, torch
from chargen.allocator import _M_MMAP_THRESHOLD, keep_freed_memory
torch.manual_seed(0)
torch.set_num_threads(1)
rnn, x = torch.nn.LSTM(64, 256, 2), torch.randn(35, 32, 64)
def faults_per_step():
    counts = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rnn(x)[0].sum().backward()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(counts[2:])  # after two steps that let the heap grow
assert ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024) == 1  # glibc's starting value
default = faults_per_step()
assert keep_freed_memory()
print(default, faults_per_step())
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    default, kept = map(float, result.stdout.split())
    assert default > 1000 and kept < default / 10, (default, kept)


def test_a_short_text_or_list_of_ones_own_trains_on_a_smaller_planned_batch(tmp_path: Path) -> None:
    """The planned batch (16 streams, 32 items) shrinks to what the training split holds; a batch
    the user gives is kept, and refused where it does not fit."""
    from chargen.config import TextConfig

    poem = "Olá, meu coração! A ação de amar é pão e canção.\nSão João, não há razão.\n" * 6  # 438 characters
    steps = TrainConfig(max_steps=3, eval_every=3, seed=0)
    text = corpus_from_text(tmp_path, poem, "poem")
    run = train(text, TINY_MODEL, steps, out=tmp_path / "poem-run")
    batch = json.loads((run.run_dir / "run.json").read_text())["train"]["batch_size"]
    assert batch == (394 - 64) // 65 == 5  # 394 train: 5 streams of 64 (+1), and a window's shift
    names = corpus_from_text(
        tmp_path, "\n".join(f"name{k}" for k in range(12)), "names", TextConfig(items="lines")
    )
    run = train(names, TINY_MODEL, steps, out=tmp_path / "names-run")
    assert json.loads((run.run_dir / "run.json").read_text())["train"]["batch_size"] == 11  # one held out
    with pytest.raises(ChargenError, match="too few for one batch"):
        train(text, TINY_MODEL, TrainConfig(max_steps=3, batch_size=16, seed=0), out=tmp_path / "given")
    assert not (tmp_path / "given").exists()
    # Too short even for one stream: the advice is what can help, not a batch that is already 1.
    tiny = corpus_from_text(tmp_path, "x" * 50, "tiny")
    with pytest.raises(ChargenError, match=r"too few for one batch.*; lower `bptt` \(at most 22 fits\)"):
        train(tiny, TINY_MODEL, steps, out=tmp_path / "tiny-run")


def test_the_checkpoints_training_time_leaves_out_validation(lamp_text: str, tmp_path: Path) -> None:
    """--max-time counts training only; the checkpoint that a resume reads its clock from must not
    hold the time validation took, or a resumed run gets less than its --max-time."""
    from safetensors import safe_open

    corpus = corpus_from_text(tmp_path, lamp_text[:100_000])
    model = ModelConfig(hidden=256, embed=32, layers=2, dropout=0.0)  # validation takes a while
    config = TrainConfig(batch_size=4, bptt=16, max_steps=4, eval_every=2, log_every=2, seed=0)
    summary = train(corpus, model, config, out=tmp_path / "run")
    with safe_open(str(tmp_path / "run" / ckpt.CHECKPOINT), framework="pt") as f:
        recorded = json.loads(f.metadata()["position"])["train_seconds"]
    validating = summary.final.seconds
    assert validating > 0.05, validating  # long enough for the test to tell
    assert recorded - summary.train_seconds < 0.25 * validating, (recorded, summary.train_seconds, validating)
