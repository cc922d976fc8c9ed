"""Checkpoints of a live run: what the model, the optimiser, the carried state and every random
generator hold, captured into a Checkpoint and put back, so that a resumed run takes exactly the
steps the uninterrupted one would have. Knows nothing about the schedule or the data.

With several processes every one takes part (the carried state and each process's dropout
generator are gathered from all), and rank 0 writes.
"""

from __future__ import annotations

import numpy as np
import torch

from chargen.checkpoint import Checkpoint, RunWriter
from chargen.errors import TrainingError
from chargen.model import CharRNN, State
from chargen.records import Position
from chargen.settings import RunSettings
from chargen.step import require_finite_weights


class Generators:
    """The run's own random generators; dropout draws from torch's global one."""

    def __init__(self, seed: int) -> None:
        self.offsets = np.random.default_rng(seed)  # each epoch's window offset
        self.resets = torch.Generator().manual_seed(seed)  # which streams start afresh


class Checkpointer:
    """Saves a run's checkpoint from the live objects, and puts one back into them."""

    def __init__(
        self,
        settings: RunSettings,
        model: CharRNN,
        optimizer: torch.optim.Optimizer,
        generators: Generators,
        writer: RunWriter,
    ) -> None:
        self.world, self.device = settings.world, settings.device
        self.streams = settings.streams
        self.model, self.optimizer, self.generators, self.writer = model, optimizer, generators, writer

    def save(self, position: Position, state: State) -> None:
        """Write everything needed to continue from `position`, in one atomic file. Every process
        must call it; rank 0 writes."""
        require_finite_weights(self.model, position.step)
        optimizer = self.optimizer.state_dict()
        states = state if isinstance(state, tuple) else (state,)
        checkpoint = Checkpoint(
            weights=self.model.state_dict(),
            moments=optimizer["state"],
            param_groups=optimizer["param_groups"],
            state=tuple(self.world.gather(s, dim=1) for s in states),  # (layers, B, hidden): every stream
            generators=self._generator_states(),
            numpy_rng=self.generators.offsets.bit_generator.state,
            position=position,
        )
        self.writer.checkpoint(checkpoint)

    def _generator_states(self) -> dict[str, torch.Tensor]:
        cuda = self.device.type == "cuda"
        states = {"torch": torch.get_rng_state(), "reset": self.generators.resets.get_state()}
        if cuda:
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world.size > 1:  # each process draws its own dropout masks: (processes, state size)
            states["torch.ranks"] = self.world.gather(torch.get_rng_state()[None], dim=0)
            if cuda:
                states["cuda.ranks"] = self.world.gather(torch.cuda.get_rng_state(self.device)[None], 0)
        return states

    def restore(self, checkpoint: Checkpoint) -> State:
        """Put the checkpoint's weights, optimiser and generators back; returns this process's share
        of the carried state."""
        try:
            self.model.load_state_dict(checkpoint.weights)
        except RuntimeError as err:
            raise TrainingError(
                f"the checkpoint does not fit the run's model: {str(err).splitlines()[0]}"
            ) from err
        self.optimizer.load_state_dict({"state": checkpoint.moments, "param_groups": checkpoint.param_groups})
        self._restore_dropout_generators(checkpoint.generators)
        self.generators.resets.set_state(checkpoint.generators["reset"])
        self.generators.offsets.bit_generator.state = checkpoint.numpy_rng
        states = [s[:, self.streams].contiguous().to(self.device) for s in checkpoint.state]
        return tuple(states) if len(states) == 2 else states[0]  # type: ignore[return-value]

    def _restore_dropout_generators(self, generators: dict[str, torch.Tensor]) -> None:
        """Each process takes back its own generator states when the run was saved by as many
        processes as there are now; otherwise rank 0 takes the saved rank 0's and the others keep
        the ones they were seeded with: data and weights continue exactly, dropout masks cannot."""
        cuda = self.device.type == "cuda"
        saved = generators.get("torch.ranks")
        if saved is not None and len(saved) == self.world.size:
            torch.set_rng_state(saved[self.world.rank].clone())  # a row of it would not do: it wants its own
            if cuda and "cuda.ranks" in generators:
                torch.cuda.set_rng_state(generators["cuda.ranks"][self.world.rank].clone(), self.device)
        elif self.world.is_main:
            torch.set_rng_state(generators["torch"])
            if cuda and "cuda" in generators:
                torch.cuda.set_rng_state(generators["cuda"], self.device)
