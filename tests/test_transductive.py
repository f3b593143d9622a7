"""Constrained transductive inference and adaptive-rank LoRA on tiny synthetic volumes."""
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from fseft_lab.adapt import AdaptConfig, adapt
from fseft_lab.evaluate import predict
from fseft_lab.methods import build, proximal_step
from fseft_lab.methods.adaptive_lora import AdaptiveLoRALinear, learned_ranks
from fseft_lab.models.foundation import FoundationModel
from fseft_lab.transductive import TransductiveConfig, barrier, entropy, hinge, log_barrier, size_prior, support_sizes


def _case(seed: int, side: int = 20, blobs: int = 1, structure: bool = True) -> dict:
    """A noisy 72x64x64 volume with a bright cube of the given side (plus optional small extra blobs)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 72, 64, 64, generator=g) * 0.2
    label = torch.zeros(1, 72, 64, 64, dtype=torch.uint8)
    if structure:
        label[:, 10:10 + side, 20:20 + side, 20:20 + side] = 1
        for b in range(1, blobs):
            label[:, 60:62, 4 * b:4 * b + 2, 2:4] = 1  # 8-voxel islands, not the largest component
    image[label > 0] += 0.6
    return {"image": image, "label": label, "structures": ("liver",), "case": f"c{seed}"}


@pytest.fixture(scope="module")
def foundation():
    torch.manual_seed(0)
    return FoundationModel(12).eval()


def _cfg(**kw):
    return AdaptConfig(**{"epochs": 12, "crops_per_volume": 2, "crop_bank": 2, "validate_every": 0, **kw})


def test_prior_is_the_mean_largest_component():
    cases = [_case(0, side=10, blobs=3), _case(1, side=12)]
    assert support_sizes(cases, ["liver"]) == {"liver": [1000, 1728]}
    assert size_prior(cases, ["liver"]) == {"liver": pytest.approx(1364.0)}


def test_prior_drops_outliers_from_five_shots():
    cases = [_case(i, side=s) for i, s in enumerate([10, 10, 10, 10, 30])]  # 27,000 is far from the median
    assert size_prior(cases, ["liver"])["liver"] == pytest.approx(1000.0)
    assert size_prior(cases[3:], ["liver"])["liver"] == pytest.approx((1000 + 27000) / 2)  # k < 5 keeps all


def test_an_empty_support_mask_gives_no_prior():
    with pytest.raises(ValueError, match="no support mask shows 'liver'.*no size prior"):
        size_prior([_case(0, structure=False)], ["liver"])


def test_hinge_is_zero_inside_the_band_and_l1_outside():
    ratio = torch.tensor([0.5, 0.7, 1.0, 1.3, 1.6])
    assert hinge(ratio, 0.3).tolist() == pytest.approx([0.2, 0.0, 0.0, 0.0, 0.3])


def test_log_barrier_extension_is_continuous_finite_and_increasing():
    t = 5.0
    z = torch.linspace(-0.9, 0.9, 1001)
    values = log_barrier(z, t)
    assert torch.isfinite(values).all() and (values.diff() > 0).all()
    edge = torch.tensor([-1 / t**2 - 1e-6, -1 / t**2 + 1e-6])
    left, right = log_barrier(edge, t)
    assert left.item() == pytest.approx(right.item(), abs=1e-4)
    assert log_barrier(torch.tensor(-0.5), t).item() == pytest.approx(-math.log(0.5) / t)
    inside, outside = barrier(torch.tensor([1.0, 1.6]), 0.3, t)  # centre of the band vs beyond it
    assert outside > inside


def test_entropy_is_largest_at_one_half():
    assert entropy(torch.zeros(1, 1, 4, 4, 4), False).item() == pytest.approx(math.log(2))
    assert entropy(torch.full((1, 1, 4, 4, 4), 8.0), False).item() < 0.01
    assert entropy(torch.zeros(1, 3, 4, 4, 4), True).item() == pytest.approx(math.log(3))


@pytest.mark.parametrize("kwargs, rule", [({"margin": 0.0}, r"margin=0.0.*\(0, 1\)"),
                                          ({"margin": 1.2}, r"margin=1.2"),
                                          ({"margins": {"kidney_left": 1.0}}, r"margins\['kidney_left'\]=1.0"),
                                          ({"weight": -0.1}, r"lambda\)=-0.1 must be >= 0"),
                                          ({"mode": "hinge"}, r"mode 'hinge'; choose one of"),
                                          ({"start": 1.5}, r"start=1.5"),
                                          ({"protocol": "each"}, r"protocol 'each'; choose one of \('per_volume'")])
def test_bad_transductive_settings_are_refused(kwargs, rule):
    with pytest.raises(ValueError, match=rule):
        TransductiveConfig(**kwargs)


def _final_ratio(result):
    prior = result.curve.attrs["size_prior"]["liver"]
    return result.curve["query_size/liver"].iloc[-1] / prior


@pytest.mark.parametrize("mode", ["penalty", "barrier"])
@pytest.mark.slow
def test_the_size_term_pulls_the_query_towards_the_prior(foundation, mode):
    support, query = [_case(1, side=20)], [_case(2, side=20)]
    ti = TransductiveConfig(mode, weight=1.0, start=0.0)
    plain = adapt(foundation, "linear_probe", support, query=query, transductive=TransductiveConfig(mode, weight=0.0, start=0.0),
                  config=_cfg(), profile="cpu", progress=False)
    steered = adapt(foundation, "linear_probe", support, query=query, transductive=ti, config=_cfg(), profile="cpu",
                    progress=False)
    assert steered.curve["query_loss"].notna().all() and (plain.curve["query_loss"] == 0).all()
    assert abs(math.log(_final_ratio(steered))) < abs(math.log(_final_ratio(plain)))


@pytest.mark.slow
def test_a_query_without_the_structure_is_pushed_towards_the_prior_size(foundation):
    """The documented risk: the prior assumes the query shows the structure."""
    support, query = [_case(1, side=20)], [_case(2, structure=False)]
    plain = adapt(foundation, "linear_probe", support, query=query, transductive=TransductiveConfig(weight=0.0),
                  config=_cfg(), profile="cpu", progress=False)
    steered = adapt(foundation, "linear_probe", support, query=query, config=_cfg(), profile="cpu", progress=False,
                    transductive=TransductiveConfig(weight=1.0, start=0.0))
    assert steered.curve["query_size/liver"].iloc[-1] > plain.curve["query_size/liver"].iloc[-1]


@pytest.mark.slow
def test_entropy_mode_needs_no_prior_and_lowers_the_query_entropy(foundation):
    support, query = [_case(1)], [_case(2)]
    runs = [adapt(foundation, "linear_probe", support, query=query, config=_cfg(), profile="cpu", progress=False,
                  transductive=TransductiveConfig("entropy", weight=w, start=0.0)) for w in (0.0, 1.0)]
    quiet, sharp = (entropy(predict(r.model, query[0]["image"][None], 64), False).item() for r in runs)
    assert sharp < quiet


@pytest.mark.slow
def test_transductive_inference_is_refused_where_it_cannot_work(foundation):
    support = [_case(1)]
    with pytest.raises(ValueError, match="only the adapter and head.*lora"):
        adapt(foundation, "lora", support, query=[_case(2)], transductive=TransductiveConfig(),
              config=_cfg(epochs=1), profile="cpu", progress=False)
    with pytest.raises(ValueError, match="at least one unlabelled query"):
        adapt(foundation, "linear_probe", support, transductive=TransductiveConfig(), config=_cfg(epochs=1),
              profile="cpu", progress=False)


def test_soft_thresholding_is_the_l1_proximal_step():
    layer = AdaptiveLoRALinear(torch.nn.Linear(4, 12), rank=2, alpha=2.0, l1=0.5)
    with torch.no_grad():
        layer.lora_s.copy_(torch.tensor([0.3, -0.3, 0.05, -0.05, 0.0, 1.0]))
    layer.proximal(lr=0.2)  # threshold 0.1
    assert layer.lora_s.tolist() == pytest.approx([0.2, -0.2, 0.0, 0.0, 0.0, 0.9])
    assert layer.rank() == 3


@pytest.mark.slow
def test_adaptive_lora_ranks_shrink_with_the_l1_weight(foundation):
    torch.manual_seed(0)
    x, target = torch.rand(1, 1, 64, 64, 64), (torch.rand(1, 1, 64, 64, 64) > 0.5).float()

    def train(l1):
        model = build(foundation, "adaptive_lora", ["liver"], rank=2, l1=l1).train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(4):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            proximal_step(model, 1e-2)
        return learned_ranks(model)

    full, sparse = train(0.0), train(5.0)
    assert len(full) == 8 and set(full.values()) == {6}  # 2 blocks x 4 stages, 3r = 6 components each
    assert sum(sparse.values()) < sum(full.values())


@pytest.mark.slow
def test_query_size_plot_draws_each_run_relative_to_its_prior(foundation):
    import matplotlib

    matplotlib.use("Agg")
    from fseft_lab.viz import plot_query_sizes

    result = adapt(foundation, "linear_probe", [_case(1)], query=[_case(2)], config=_cfg(epochs=5, validate_every=2),
                   profile="cpu", progress=False, transductive=TransductiveConfig(weight=0.0))
    logged = result.curve.dropna(subset=["query_size/liver"])
    assert list(logged.epoch) == [0, 2, 4]                      # every validate_every epochs and the last
    ax = plot_query_sizes({"no TI": result.curve}, "liver", margin=0.3)
    line = ax.get_lines()[-1]
    expected = logged["query_size/liver"] / result.curve.attrs["size_prior"]["liver"]
    assert list(line.get_xdata()) == [0, 2, 4] and list(line.get_ydata()) == pytest.approx(list(expected))


@pytest.mark.slow
def test_every_query_step_runs_at_its_epochs_last_support_rate(foundation):
    """Issue 35: the query step ran after the scheduler's step, at the next step's rate (0 after the last one)."""
    rates = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"]))
    try:
        adapt(foundation, "linear_probe", [_case(1), _case(3)], query=[_case(2)], config=_cfg(epochs=4), profile="cpu",
              progress=False, transductive=TransductiveConfig(weight=1.0, start=0.0))
    finally:
        hook.remove()
    assert len(rates) == 4 * 3                          # each epoch: two support steps, then one query step
    last_support, query = rates[1::3], rates[2::3]
    assert all(r > 0 for r in query), query
    assert query == last_support


@pytest.mark.slow
def test_per_volume_adaptations_share_their_first_epochs_and_equal_separate_calls(foundation):
    """Per-volume TI trains the epochs before the query term once and forks: each query's model,
    curve and logged sizes must be those of an adaptation run for that query alone."""
    from fseft_lab.evaluate import trunk_features

    support, queries = [_case(1, side=20)], [_case(2, side=14), _case(3, side=26)]
    for q in queries:   # the trunk once per query volume, as experiments.run does
        q["features"] = trunk_features(foundation, q["image"], 64)
    ti = TransductiveConfig("penalty", weight=1.0, start=0.5)
    kw = dict(config=_cfg(epochs=4, validate_every=1), profile="cpu", progress=False, transductive=ti)
    forked = adapt(foundation, "linear_probe", support, query=queries, **kw)
    assert list(forked.per_volume) == ["c2", "c3"] and forked is forked.per_volume["c2"]
    for query in queries:
        alone = adapt(foundation, "linear_probe", support, query=[query], **kw)
        mine = forked.per_volume[query["case"]]
        for a, b in zip(alone.model.classifier.parameters(), mine.model.classifier.parameters()):
            assert torch.equal(a, b)
        columns = ["epoch", "loss", "query_loss", "query_size/liver"]
        assert alone.curve[columns].equals(mine.curve[columns])
    heads = [r.model.classifier for r in forked.per_volume.values()]
    assert heads[0] is not heads[1]
    assert not all(torch.equal(a, b) for a, b in zip(heads[0].parameters(), heads[1].parameters()))
    # lambda = 0, the equal-schedule baseline: the queries cannot move the model, so one adaptation
    # (on TI's schedule, which a query-free run would end early) serves them all
    kw["transductive"] = TransductiveConfig(weight=0.0)
    baseline = adapt(foundation, "linear_probe", support, query=queries, **kw)
    assert not baseline.per_volume and baseline.epochs_run == 4 and kw["transductive"].label == "none, TI schedule"
    alone = adapt(foundation, "linear_probe", support, query=queries[1:], **kw)
    assert all(torch.equal(a, b) for a, b in zip(alone.model.classifier.parameters(), baseline.model.classifier.parameters()))


@pytest.mark.slow
def test_transductive_inference_runs_its_own_schedule_unless_the_config_sets_one(foundation):
    """TI's epochs (the reference's 100 by default) replace the profile's; AdaptConfig's win over both."""
    support, query = [_case(1)], [_case(2)]
    common = dict(query=query, profile="cpu", progress=False)
    short = adapt(foundation, "linear_probe", support, config=_cfg(epochs=None), transductive=TransductiveConfig(epochs=3), **common)
    assert short.epochs_run == 3 and short.curve.query_loss.notna().sum() == 2      # the query term from epoch 1
    fixed = adapt(foundation, "linear_probe", support, config=_cfg(epochs=2), transductive=TransductiveConfig(epochs=3), **common)
    assert fixed.epochs_run == 2
    with pytest.raises(ValueError, match="epochs=0 must be >= 1"):
        TransductiveConfig(epochs=0)
