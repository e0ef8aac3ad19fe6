"""LengthGroupedBatches, the trainer's sampler: every row exactly once per epoch, new batches each
epoch, the same batches for the same seed and epoch (what resume relies on); evaluation's
length-sorted batches, whose results come back in row order."""
import numpy as np
import pytest
import torch
from datasets import Dataset

from lora_exp.data import LengthGroupedBatches, eval_batches, row_lengths

SEEDS = range(6)
# (rows, batch size): n divisible by the batch size, not divisible, smaller than one batch,
# and more rows than one mega-batch (batch_size · mega) so several are sorted apart.
SHAPES = [(64, 8), (61, 8), (5, 8), (1, 1), (1037, 4)]


def _lengths(n: int, seed: int) -> list[int]:
    return np.random.default_rng(100 + seed).integers(1, 60, size=n).tolist()


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize("n,batch_size", SHAPES)
def test_every_row_exactly_once_per_epoch(n, batch_size, group_by_length):
    for seed in SEEDS:
        sampler = LengthGroupedBatches(_lengths(n, seed), batch_size, seed,
                                       group_by_length=group_by_length)
        for epoch in range(3):
            batches = sampler.batches(epoch)
            rows = np.concatenate(batches)
            assert sorted(rows.tolist()) == list(range(n)), (seed, epoch)
            assert len(batches) == len(sampler) == -(-n // batch_size)  # ceil(n / batch size)
            # Only one batch may be short (the last one cut), never an empty one.
            sizes = sorted(len(b) for b in batches)
            assert sizes[1:] == [batch_size] * (len(batches) - 1) and 1 <= sizes[0] <= batch_size


@pytest.mark.parametrize("group_by_length", [True, False])
def test_batches_change_between_epochs(group_by_length):
    for seed in SEEDS:
        sampler = LengthGroupedBatches(_lengths(61, seed), 8, seed, group_by_length=group_by_length)
        epochs = [[b.tolist() for b in sampler.batches(e)] for e in range(4)]
        assert all(epochs[i] != epochs[j] for i in range(4) for j in range(i))


@pytest.mark.parametrize("group_by_length", [True, False])
def test_same_seed_and_epoch_give_identical_batches(group_by_length):
    for seed in SEEDS:
        lengths = _lengths(61, seed)
        a = LengthGroupedBatches(lengths, 8, seed, group_by_length=group_by_length)
        b = LengthGroupedBatches(list(lengths), 8, seed, group_by_length=group_by_length)
        for epoch in (0, 1, 5):
            first, again = a.batches(epoch), b.batches(epoch)
            assert [x.tolist() for x in first] == [x.tolist() for x in again]
            assert [x.tolist() for x in a.batches(epoch)] == [x.tolist() for x in first]
        other = LengthGroupedBatches(lengths, 8, seed + 1, group_by_length=group_by_length)
        assert [x.tolist() for x in other.batches(0)] != [x.tolist() for x in a.batches(0)]


@pytest.mark.parametrize("n,batch_size", SHAPES)
def test_eval_batches_cover_every_row_once_sorted_by_length(n, batch_size):
    lengths = np.asarray(_lengths(n, 0))
    batches = eval_batches(lengths, batch_size)
    assert sorted(np.concatenate(batches).tolist()) == list(range(n))
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    flat = lengths[np.concatenate(batches)]
    assert (np.diff(flat) <= 0).all()  # longest first


def test_row_lengths_reads_a_subset_through_its_indices():
    ds = Dataset.from_dict({"input_ids": [[1] * (i % 7 + 1) for i in range(50)]})
    assert row_lengths(ds).tolist() == [i % 7 + 1 for i in range(50)]
    sub = ds.select([9, 2, 30])
    assert row_lengths(sub).tolist() == [len(r) for r in sub["input_ids"]] == [3, 3, 3]
    sub = ds.select([5, 1, 3])
    assert row_lengths(sub).tolist() == [6, 2, 4]


def test_predict_returns_rows_in_their_order(make_cfg):
    from lora_exp.models import build_model, load_tokenizer
    from lora_exp.tasks.glue import predict
    cfg = make_cfg(["model=tiny_bert"])
    net = build_model(cfg.model, "cls", 2, seed=0).eval()
    rng = np.random.default_rng(0)
    ids = [[101, *rng.integers(1000, 5000, size=int(k)).tolist(), 102] for k in rng.integers(1, 30, 23)]
    ds = Dataset.from_dict({"input_ids": ids, "labels": list(range(23))})
    logits, labels = predict(net, ds, load_tokenizer(cfg.model), 4, torch.device("cpu"), None)
    assert labels.tolist() == list(range(23))
    with torch.no_grad():
        one_by_one = torch.cat([net(input_ids=torch.tensor([r])).logits for r in ids]).numpy()
    np.testing.assert_allclose(logits, one_by_one, rtol=1e-5, atol=1e-5)


def test_grouping_puts_similar_lengths_together():
    # Within one mega-batch rows are sorted by length before batching: each batch's lengths
    # span far less than a random batch's would.
    lengths = _lengths(400, 0)
    grouped = LengthGroupedBatches(lengths, 8, 0).batches(0)
    plain = LengthGroupedBatches(lengths, 8, 0, group_by_length=False).batches(0)
    spread = lambda bs: np.mean([np.ptp(np.asarray(lengths)[b]) for b in bs])
    assert spread(grouped) < spread(plain) / 4
