"""LTU: it can only ever reach its m retain examples (audited at the data door), it logs the cosine
between the forget and retain gradients before/after harmonization, and its variants run."""
import pytest
import torch

from tests.idx_util import make_fake
from unlearning.data import DataConfig, load_dataset
from unlearning.splits import MethodData, SplitConfig, make_split, retain_subset
from unlearning.trial import load_trial_config, run_trial


def trial(cache, seed=0, data=None, **params):
    return run_trial(load_trial_config({
        "method": "ltu", "params": {"epochs": 1, "batch_size": 64, **params},
        "data": {"name": "digits"}, "model": "small_cnn", "retrain": False,
        "seeds": {"unlearn_seed": seed}, "cache_dir": str(cache), "eval": {"mia": False}, **(data or {})}))


@pytest.fixture(scope="module", params=["digits", "fashion_mnist"])
def door_data(request, tmp_path_factory):
    """Trial fields: digits, and a Fashion-MNIST fake in the IDX format with DeepUnlearn's split rule
    and the fmnist_cpu model (a 2-epoch original: the door is under test, not the model)."""
    if request.param == "digits":
        return {}
    root = tmp_path_factory.mktemp("fmnist-ltu")
    make_fake(root, 400, 40)
    return {"data": {"name": "fashion_mnist", "root": str(root), "val_rule": "train_test_split",
                     "val_fraction": 0.15, "seed": 123},
            "split": {"forget_fraction": 0.1, "rule": "train_test_split", "seed": 123},
            "model": "lenet", "train": {"epochs": 2}}


def test_ltu_only_ever_reads_its_retain_subset(oracle_cache, monkeypatch, door_data):
    m, seed = 150, 3
    handed_out = []
    real = MethodData._gather

    def audited(self, idx, forget, kind, train_aug):
        if len(self.forget):  # the method's door (the oracles' training views have no forget set)
            handed_out.append(idx.detach().cpu().clone())
        return real(self, idx, forget, kind, train_aug)

    monkeypatch.setattr(MethodData, "_gather", audited)
    r = trial(oracle_cache, seed=seed, data=door_data, retain_subset=m, epochs=2)
    assert r.state == "COMPLETE", r.error
    assert r.metrics["retain_examples_seen"] == m
    ds = load_dataset(DataConfig(**door_data.get("data", {"name": "digits"})))
    split = make_split(ds, SplitConfig(**door_data.get("split", {})), 0)
    allowed = set(retain_subset(split.retain, m, seed).tolist()) | set(split.forget.tolist())
    touched = set(torch.cat(handed_out).tolist())
    assert touched <= allowed
    assert len(touched - set(split.forget.tolist())) == m


def test_restricted_door_refuses_other_retain_indices():
    ds = load_dataset(DataConfig(name="digits"))
    split = make_split(ds, SplitConfig(), 0)
    d = MethodData(ds, split.forget, split.retain, val=split.val, gen=torch.Generator().manual_seed(0))
    sub = retain_subset(split.retain, 20, 0)
    d.restrict_retain(sub)
    assert len(d.gather(sub).idx) == 20 and len(d.gather(split.forget[:3]).idx) == 3
    outside = split.retain[~torch.isin(split.retain, sub)][:1]
    with pytest.raises(ValueError, match="outside"):
        d.gather(outside)
    for b in d.batches("retain", 8):
        assert torch.isin(b.idx, sub).all()
    with pytest.raises(ValueError, match="not part"):
        d.restrict_retain(outside)


@pytest.mark.parametrize("mode", ["symmetric", "one_sided"])
def test_step_history_holds_cosines_before_and_after(oracle_cache, mode):
    r = trial(oracle_cache, retain_subset=100, harmonization=mode)
    assert r.state == "COMPLETE", r.error
    assert len(r.step_history) == r.history[0]["steps"] > 0
    for row in r.step_history:
        assert {"cos_before", "cos_after", "l_remember", "l_forget", "audit_member_p"} <= row.keys()
        assert row["cos_after"] >= -1e-5  # no conflict left (projected pair)
        if row["cos_before"] >= 0:
            assert row["cos_after"] == pytest.approx(row["cos_before"], abs=1e-5)


def test_ltu_with_eupmu_surgery_and_second_order(oracle_cache):
    r = trial(oracle_cache, retain_subset=100, combiner="eupmu", first_order=False, inner_steps=2)
    assert r.state == "COMPLETE", r.error
    assert r.metrics["retain_examples_seen"] == 100
    assert all("lambda" in row and row["lambda"] >= 0 for row in r.step_history)


def test_forgetting_feedback_is_the_mean_over_attacks_of_each_bce(monkeypatch):
    """Mean over K of BCE(member logit_k, non-member), not the BCE of the mean logit, on the loss
    LTU's step builds: attacks that disagree (+4 and -4 on one example) give (softplus(4) +
    softplus(-4)) / 2 = 2.02 where the mean logit 0 would give log 2 = 0.69."""
    import torch.nn.functional as F

    from unlearning import mia_models as mia
    from unlearning.methods import Context, get_method
    from unlearning.models import build_model

    logits = torch.tensor([[4.0, 1.0], [-4.0, 3.0]])  # (K = 2 attacks, 2 query rows)
    monkeypatch.setattr(mia, "member_logits", lambda nets, out, y: logits)
    ds = load_dataset(DataConfig(name="digits"))
    split = make_split(ds, SplitConfig(), 0)
    gen = torch.Generator().manual_seed(0)
    cls = get_method("ltu")
    model = build_model("mlp", ds.in_shape, ds.num_classes)
    m = cls(cls.Config(retain_subset=20, mia_steps=1, mia_models=2),
            Context(MethodData(ds, split.forget, split.retain, val=split.val, gen=gen), model,
                    torch.device("cpu"), gen, torch.no_grad))
    m.setup(model)
    m.start_epoch(0, model)
    b = m.ctx.data.gather(split.forget[:4])  # 4 forget rows: the query rows are 1 and 3
    step = m.step(model, b)
    mean_of_bce = float(F.softplus(logits).mean(0).mean())
    assert float(step.logs["l_forget"]) == pytest.approx(mean_of_bce, rel=1e-5)
    assert abs(mean_of_bce - float(F.softplus(logits.mean(0)).mean())) > 0.5


def test_retain_subset_larger_than_the_retain_set_fails_cleanly(oracle_cache):
    r = trial(oracle_cache, retain_subset=10**6)
    assert r.state == "FAIL" and "retain_subset" in r.error
