"""Starting a new run from a trained one (`train --init RUN`): the parent's text settings and shape,
its vocabulary grown by the new text's characters, and its best weights moved into the grown model
so that the old characters' predictions are unchanged at the start. Knows nothing about the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chargen.catalogue import file_sha256
from chargen.checkpoint import BEST, CHECKPOINT, Run, load_model_weights, load_run
from chargen.config import ModelConfig, TextConfig, differing
from chargen.corpus import Corpus, Source, load_corpus
from chargen.errors import ConfigError, RunError
from chargen.model import CharRNN
from chargen.vocab import Vocab

# A new character's output row starts this many nats below the least confident of the parent's
# predictions (on its validation text), so its share of the probability is at most e^-12 (6e-6)
# per new character: the old characters' losses move by less than that, yet a few steps of
# training on the new row's weights lift it where the new text needs it.
NEW_ROW_MARGIN = 12.0
# Text settings that may differ from the parent's: how a file is decoded, not what its text becomes.
READING = ("encoding", "errors")


@dataclass(frozen=True)
class Parent:
    """Where a fine-tuned run started: recorded in its run.json."""

    path: str  # the parent run's directory, resolved
    weights_sha256: str  # of the weights file it started from
    weights: str  # that file's name: best.safetensors, or the checkpoint before a first validation
    unknown: str = "extend"  # what became of characters the parent never saw: resuming reads so again

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "weights_sha256": self.weights_sha256,
            "weights": self.weights,
            "unknown": self.unknown,
        }


@dataclass
class Start:
    """A fine-tuned run's beginning: the corpus in the grown vocabulary, the model's shape (its
    dropout left to plan) and the weights to start from."""

    corpus: Corpus
    model: ModelConfig
    weights: dict[str, torch.Tensor]
    parent: Parent
    new_chars: list[str]


def text_settings(run: Run, given: dict[str, Any]) -> TextConfig:
    """The parent's text settings, with the file-reading ones `given` where they differ; any other
    setting given that differs from the parent's is refused, naming it."""
    parent = run.text_config.to_dict()
    differ = [
        name for name, value in given.items() if name not in READING and value != parent.get(name, value)
    ]
    if differ:
        shown = "; ".join(differing(name, given[name], parent[name], "the parent") for name in differ)
        raise ConfigError(
            f"a run started from {run.path} reads its text as the parent did, and these differ: "
            f"{shown}; leave them out (only `encoding` and `errors` may change)",
            differ[0],
        )
    return replace(run.text_config, **{k: v for k, v in given.items() if k in READING})


SHAPE = ("cell", "size", "layers", "hidden", "embed", "tie_weights")  # the parent's; dropout may change


def start_from(
    parent_dir: Path | str,
    source: Source,
    given_text: dict[str, Any] | None = None,
    unknown: str = "extend",
    device: torch.device | str = "cpu",
    given_model: dict[str, Any] | None = None,
) -> Start:
    """Everything a run started from `parent_dir` needs, before anything is written.

    `unknown` says what becomes of characters the parent never saw: "extend" grows the vocabulary
    (new embedding and output rows), "replace" or "skip" map them as evaluation does. The text
    settings and the model's shape are the parent's (`given_text` and `given_model` may change
    only how the file is decoded and the dropout).
    """
    if unknown not in ("extend", "replace", "skip"):
        raise ConfigError(f"`unknown` must be extend, replace or skip, not {unknown!r}", "unknown")
    shaped = [name for name in SHAPE if name in (given_model or {})]
    if shaped:
        raise ConfigError(
            f"a run started from another has the parent's shape: leave `{shaped[0]}` out", shaped[0]
        )
    run = load_run(parent_dir)
    model = load_model_weights(run, device)  # refuses damaged weights, naming the file
    text = text_settings(run, given_text or {})
    old = run.vocab
    if unknown == "extend" and isinstance(old, Vocab):
        own = load_corpus(source, text)  # the new text's own characters
        new_chars = [c for c in own.vocab.chars if c not in set(old.chars)]
        vocab = Vocab([*old.chars, *new_chars]) if new_chars else old
        # The characters rarer than the parent's `min_count` are not among them: they become the
        # unknown symbol, as they would in a run of its own (its vocabulary then holds it).
        corpus = load_corpus(source, text, vocab=vocab, unknown="replace")
    else:
        new_chars = []
        corpus = load_corpus(source, text, vocab=old, unknown="replace" if unknown == "extend" else unknown)
    weights = grown_weights(model, old, corpus.vocab, run.validation_ids())
    given = given_model or {}
    shape = replace(  # dropout None: planned for this run, and the weight drop with it
        run.model_config,
        vocab_size=len(corpus.vocab),
        dropout=given.get("dropout"),
        weight_drop=given.get("weight_drop"),
    )
    return Start(corpus, shape, weights, parent_record(run, unknown), new_chars)


@torch.inference_mode()
def grown_weights(
    model: CharRNN, old: Vocab | Any, vocab: Vocab | Any, probe_ids: np.ndarray
) -> dict[str, torch.Tensor]:
    """The parent's weights for a model with vocabulary `vocab` (the old one grown, in code-point
    order): each old character's embedding and output rows move to its new id; a new character's
    embedding is the mean of the old ones and its output row predicts it below every old character
    by NEW_ROW_MARGIN nats on `probe_ids` (the parent's own validation text)."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if len(vocab) == len(old):
        return weights
    old_ids = {c: i for i, c in enumerate(old.chars)}
    kept = [old_ids.get(c, -1) for c in vocab.chars]  # (V_new,) the old id of each new id, or -1
    new = torch.tensor([i < 0 for i in kept])
    source = torch.tensor([max(i, 0) for i in kept])
    probe = torch.from_numpy(np.asarray(probe_ids[:4096]).astype(np.int64)).view(-1, 1)
    logits, _ = model(probe.to(next(model.parameters()).device))  # (T, 1, V_old)
    floor = float(logits.float().logsumexp(-1).min())  # the least confident of its predictions
    bias = floor - NEW_ROW_MARGIN - math.log(int(new.sum()))
    embed = weights["embed.weight"]
    grown_embed = embed[source].clone()
    grown_embed[new] = embed.mean(0)
    weights["embed.weight"] = grown_embed
    if model.config.tie_weights:
        weights["head.weight"] = grown_embed
    else:
        grown_head = weights["head.weight"][source].clone()
        grown_head[new] = 0.0  # with the bias below: predicted below every old character
        weights["head.weight"] = grown_head
    grown_bias = weights["head.bias"][source].clone()
    grown_bias[new] = bias
    weights["head.bias"] = grown_bias
    return weights


def reading_policy(unknown: str) -> str:
    """How a fine-tune reads a text other than its own on resuming: an `extend` took in its own
    text's characters, so another's new ones are an error; `replace` and `skip` read as they began."""
    return "error" if unknown == "extend" else unknown


def parent_record(run: Run, unknown: str = "extend") -> Parent:
    file = run.path / BEST if (run.path / BEST).exists() else run.path / CHECKPOINT
    try:
        digest = file_sha256(file)
    except OSError as err:
        raise RunError(f"cannot read {file}: {err.strerror}") from err
    return Parent(str(run.path.resolve()), digest, file.name, unknown)
