import torch

from protosphere.buffer import ReplayBuffer


def offer_stream(buffer, labels, batch=10):
    for start in range(0, len(labels), batch):
        y = labels[start : start + batch]
        buffer.add(y, examples=torch.arange(start, start + len(y)).float()[:, None])


def test_reservoir_keeps_each_item_with_probability_capacity_over_n():
    n, capacity, trials = 100, 20, 600
    hits = torch.zeros(n)
    for seed in range(trials):
        buffer = ReplayBuffer(capacity, "reservoir", seed=seed)
        offer_stream(buffer, torch.zeros(n, dtype=torch.long))
        assert len(buffer) == capacity
        stored = buffer.all()["examples"].flatten().long()
        assert len(stored.unique()) == capacity  # no item twice
        hits[stored] += 1
    rate = hits / trials
    # each of the 100 items should be kept with probability 0.2; binomial std ~ 0.016
    assert (rate - 0.2).abs().max() < 0.075
    assert abs(rate[:50].mean() - rate[50:].mean()) < 0.03  # early and late items equally likely


def test_class_balanced_counts_stay_balanced_on_an_imbalanced_stream():
    labels = torch.cat([torch.zeros(300), torch.ones(60), torch.full((30,), 2)]).long()
    buffer = ReplayBuffer(30, "class_balanced", seed=0)
    offer_stream(buffer, labels)
    counts = buffer.class_counts()
    assert sorted(counts) == [0, 1, 2] and sum(counts.values()) == 30
    assert max(counts.values()) - min(counts.values()) <= 1
    # reservoir within class: kept class-0 items are spread over the whole class-0 stream
    kept = buffer.all()
    zeros = kept["examples"].flatten()[kept["labels"] == 0]
    assert zeros.max() > 150


def test_rows_stay_aligned_and_state_round_trips():
    buffer = ReplayBuffer(8, "reservoir", seed=3)
    for start in range(0, 40, 5):
        y = torch.arange(start, start + 5) % 4
        x = torch.arange(start, start + 5).float()
        buffer.add(y, examples=x[:, None], logits=x[:, None] * 2)
    data = buffer.all()
    assert torch.equal(data["examples"].long().flatten() % 4, data["labels"])
    assert torch.equal(data["logits"], data["examples"] * 2)
    clone = ReplayBuffer(8, "reservoir", seed=99)
    clone.load_state_dict(buffer.state_dict())
    a, b = buffer.sample(4), clone.sample(4)
    assert torch.equal(a["examples"], b["examples"])  # the generator state came along


def test_shrink_per_class_is_even():
    buffer = ReplayBuffer(40, "class_balanced", seed=0)
    offer_stream(buffer, torch.arange(200) % 4)
    buffer.shrink_per_class(5)
    assert buffer.class_counts() == {0: 5, 1: 5, 2: 5, 3: 5}
    assert len(buffer) == 20


def test_sample_without_replacement():
    buffer = ReplayBuffer(10, seed=0)
    offer_stream(buffer, torch.arange(10))
    drawn = buffer.sample(10)["examples"].flatten()
    assert len(drawn.unique()) == 10


def test_replay_stream_follows_the_run_seed():
    """A buffer made after ``torch.manual_seed(s)`` (as the runner seeds before it builds a method) draws its own
    stream of s: the same seed gives the same decisions, another seed other ones (runs of different seeds make
    independent replay decisions)."""

    def decisions(seed):
        torch.manual_seed(seed)
        buffer = ReplayBuffer(5, "reservoir")
        torch.manual_seed(1234)  # what happens to the global RNG afterwards does not matter
        buffer.add(torch.arange(200), x=torch.arange(200).float().unsqueeze(1))
        return buffer.data["labels"][: buffer.size].tolist() + buffer.sample(3)["labels"].tolist()

    assert decisions(1) == decisions(1)
    assert decisions(1) != decisions(2)
    torch.manual_seed(0)
    assert ReplayBuffer(5).generator.initial_seed() == 0  # seed 0 keeps the stream earlier versions used for all
