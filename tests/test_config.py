import pytest

from chargen.config import (
    DEFAULT_TIME_BUDGET,
    AdaptConfig,
    ModelConfig,
    SampleConfig,
    TextConfig,
    TrainConfig,
    differing,
    parse_duration,
)
from chargen.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("3m", 180), ("1.5h", 5400), ("1h30m", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "3x", "0", "-5"])
def test_bad_durations_name_the_field(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^`max_time` must be") as error:
        parse_duration(text)
    assert error.value.field == "max_time" and "--" not in str(error.value)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: ModelConfig(cell="lstmx"), "cell"),
        (lambda: ModelConfig(hidden=0), "hidden"),
        (lambda: ModelConfig(dropout=1.0), "dropout"),
        (lambda: ModelConfig(weight_drop=-0.1), "weight_drop"),
        (lambda: ModelConfig(tie_weights=True, embed=32, hidden=64), "tie_weights"),
        (lambda: TrainConfig(batch_size=0), "batch_size"),
        (lambda: TrainConfig(val_fraction=1.0), "val_fraction"),
        (lambda: TrainConfig(clip=-1), "clip"),
        (lambda: SampleConfig(temperature=-0.5), "temperature"),
        (lambda: SampleConfig(temperature=1e39), "temperature"),
        (lambda: SampleConfig(temperature=float("nan")), "temperature"),
        (lambda: SampleConfig(seed=-1), "seed"),
        (lambda: TrainConfig(seed=2**64), "seed"),
        (lambda: TrainConfig(lr=float("inf")), "lr"),
        (lambda: ModelConfig(dropout=float("nan")), "dropout"),
        (lambda: AdaptConfig(lr=float("inf")), "lr"),
        (lambda: TextConfig(encoding="rot13"), "encoding"),
        (lambda: SampleConfig(temperature=float("inf")), "temperature"),
        (lambda: SampleConfig(top_p=0), "top_p"),
        (lambda: SampleConfig(top_k=0), "top_k"),
        (lambda: SampleConfig(length=-1), "length"),
    ],
)
def test_bad_values_name_the_field(make, field: str) -> None:
    """The library speaks of its own fields; the command line turns them into flags (test_cli.py)."""
    with pytest.raises(ConfigError, match=f"^`{field}` ") as error:
        make()
    assert error.value.field == field and "--" not in str(error.value)


def test_a_run_with_no_limit_gets_the_default_time_budget() -> None:
    assert TrainConfig().max_time == DEFAULT_TIME_BUDGET
    assert TrainConfig(max_steps=5).max_time is None


def test_a_run_saved_before_newer_settings_resumes_as_it_was_trained() -> None:
    newer = ("precision", "patience")
    saved = {k: v for k, v in TrainConfig(max_steps=5).to_dict().items() if k not in newer}
    old = TrainConfig.from_dict(saved)
    assert old.precision == "fp32" and old.patience == 0  # neither bf16 nor early stopping existed
    assert TrainConfig.from_dict(TrainConfig(max_steps=5).to_dict()).patience == TrainConfig.patience


def test_precision_auto_means_bf16_only_on_a_cpu_with_bf16_units() -> None:
    """The rule needs no GPU to check: resolve_precision reads only the device's type (and the
    CPU's flags). On a GPU, auto is fp32 (bf16 was slower on an H200). The
    earlier rule (bf16 where torch.cuda.is_bf16_supported()) gave the same answers on a machine
    without CUDA, so this tells the two apart only where CUDA is present."""
    import torch

    from chargen.device import cpu_has_native_bf16, resolve_precision

    assert resolve_precision("auto", torch.device("cuda")) is None
    assert resolve_precision("auto", torch.device("mps")) is None
    on_cpu = resolve_precision("auto", torch.device("cpu"))
    assert on_cpu == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert resolve_precision("bf16", torch.device("cuda")) == torch.bfloat16
    assert resolve_precision("fp32", torch.device("cpu")) is None


def test_a_differing_setting_is_named_with_the_runs_value_in_plain_words() -> None:
    assert differing("items", "lines", None, "the parent") == "`items='lines'` (the parent has none)"
    assert differing("lowercase", True, False, "the run") == "`lowercase` (the run has it off)"
    assert differing("items", "lines", "\n\n", "the parent") == "`items='lines'` (the parent has '\\n\\n')"
    assert differing("min_count", 2, 1, "the parent") == "`min_count=2` (the parent has 1)"
