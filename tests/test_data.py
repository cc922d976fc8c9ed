import numpy as np
import pytest
import torch

from chargen.data import StreamBatches, split_ids
from chargen.errors import CorpusError


def test_split_holds_out_the_last_fraction() -> None:
    ids = np.arange(100, dtype=np.uint8)
    train, val = split_ids(ids, 0.1)
    assert len(val) == 10 and val[0] == 90 and train[-1] == 89


def test_targets_are_inputs_shifted_by_one() -> None:
    ids = np.arange(1000, dtype=np.uint16)  # each id is its own position
    batches = StreamBatches(ids, batch_size=4, bptt=7)
    for x, y, *_ in batches.epoch(offset=3):
        assert x.shape == y.shape and x.shape[1] == 4
        assert (y == x + 1).all()


def test_each_column_continues_across_windows() -> None:
    ids = np.arange(1000, dtype=np.uint16)
    batches = StreamBatches(ids, batch_size=4, bptt=7)
    windows = list(batches.epoch(offset=2))
    assert len(windows) == batches.windows_per_epoch
    column = np.concatenate([w.x[:, 1].numpy() for w in windows])
    assert (np.diff(column) == 1).all()  # one contiguous run of the text, so state can carry
    assert sum(w.x.numel() for w in windows) == batches.chars_per_epoch == sum(w.targets for w in windows)


def test_too_short_a_text_says_how_to_fit() -> None:
    with pytest.raises(CorpusError, match="lower `batch_size` or `bptt`"):
        StreamBatches(np.zeros(50, dtype=np.uint8), batch_size=8, bptt=32)


def test_shares_of_the_streams_side_by_side_are_the_whole_batch() -> None:
    ids = np.arange(1000, dtype=np.uint16)
    whole = StreamBatches(ids, batch_size=4, bptt=7)
    first, second = (StreamBatches(ids, 4, 7, streams=s) for s in (slice(0, 1), slice(1, 4)))
    for w, w0, w1 in zip(whole.epoch(3), first.epoch(3), second.epoch(3), strict=True):
        assert torch.equal(w.x, torch.cat([w0.x, w1.x], dim=1)) and torch.equal(
            w.y, torch.cat([w0.y, w1.y], dim=1)
        )


def test_longest_window_is_the_largest_bptt_that_fits_one_stream() -> None:
    from chargen.data import longest_window, streams_that_fit

    for n in range(3, 400):
        window = longest_window(n)
        assert streams_that_fit(n, window) >= 1 and streams_that_fit(n, window + 1) == 0, n
