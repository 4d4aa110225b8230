"""Per-example audits of an unlearning configuration: U-LiRA (Hayes et al., arXiv 2403.01218) and
KLoM (Georgiev et al., arXiv 2410.23232, App. E.1), with the relearning attack (unlearning/relearn.py,
Chundawat et al. 2023) on the same models. docs/metrics.md states every definition and choice.

The models, each trained once through the oracle cache under a content-addressed key (a second audit,
or a larger one, reuses every model an earlier one trained); `base` is the trial's train_seed:

    shadow k     the retain set + S_k, a seeded random half of the forget set (seed base + k)
    original k   the whole training set (seed base + k): the pool KLoM and relearning audit
    retrain k    the retain set (seed base + k): what the `retrain` configuration turns shadow k and
                 original k into
    reference k  the retain set (seed base + 1_000_000 + k): KLoM's oracles, relearning's yardstick

S_k depends only on (audit seed, k), so the first 16 shadows of a 32-shadow audit are those of a
16-shadow one. Each configuration unlearns shadow k forgetting S_k (U-LiRA) and original k forgetting
the whole forget set (KLoM, relearning), with unlearn seed + k. Two pseudo-configurations frame every
audit: `original` (no unlearning: the scale's top) and `retrain` (the scale's floor).

U-LiRA. The score of an example under a model is its logit-scaled confidence
phi = log p_y - log(1 - p_y) = z_y - logsumexp_{k != y} z_k (computed from the logits, so it stays
finite where p_y rounds to 1); KLoM's margin is the same number. Each unlearned shadow j in turn is
the audited model (leave-one-out, as Hayes et al. evaluate): for every forget example, a Gaussian is
fitted to its scores under the OTHER unlearned shadows that held it (IN: trained on, then unlearned)
and one to those that never saw it (OUT); the online statistic is log N(phi_j; IN) - log N(phi_j;
OUT), the offline one -log N(phi_j; OUT) (only the never-seen Gaussian: far from it in either
direction is suspicious). Over all (shadow, example) pairs, membership of S_j is the label: AUC and
TPR at 1% and 0.1% FPR. AUC 0.5 = the unlearned examples look never seen.

KLoM. Per example, the N margins of the unlearned originals (p) and the N margins of the reference
Retrain models (q), both clipped to [-100, 100], share 20 equal-width bins over their pooled range;
KLoM = KL(p || q) with q floored at 1e-5 in the bins where p has mass and renormalised. This is the
order of the reference implementation's function signature (EasyDUB `compute_binned_KL_div(p=
unlearned, q=oracle)`; its run.py passes the two the other way round); 0 = indistinguishable.
Reported on the forget set and on seeded subsets of the retain and validation sets.
"""
from __future__ import annotations

import hashlib
import math
import platform
import time
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from unlearning.audit_config import AuditConfig
from unlearning.data import Dataset, load_dataset
from unlearning.errors import FailureKind
from unlearning.loop import autocast_factory
from unlearning.methods import get_method
from unlearning.oracle import Trained, cached_train, oracle, oracle_key
from unlearning.plugins import load_shipped
from unlearning.relearn import ain, relearn_time, train_accuracy
from unlearning.splits import Split, make_split
from unlearning.trial import default_cache_dir, failure_of, load_trial_config, resolve_device, unlearn

REFERENCE_SEED_OFFSET = 1_000_000  # reference Retrain k trains with seed base + this + k
FPRS = (0.01, 0.001)


# -- which examples, which models ----------------------------------------------------------------

def shadow_members(n_forget: int, seed: int, k: int) -> np.ndarray:
    """Which forget positions shadow k holds (bool, n_forget // 2 of them): a function of (seed, k)
    alone, so it does not change with the number of shadows."""
    rng = np.random.default_rng([seed, k])
    held = np.zeros(n_forget, dtype=bool)
    held[rng.permutation(n_forget)[: n_forget // 2]] = True
    return held


def klom_subset(idx: torch.Tensor, n: int, seed: int, salt: int) -> torch.Tensor:
    """A seeded subset of at most n indices (sorted), the same for every model of an audit."""
    if len(idx) <= n:
        return idx
    rng = np.random.default_rng([seed, salt])
    return idx[torch.from_numpy(np.sort(rng.choice(len(idx), n, replace=False)))]


def model_seed(base: int, index: int, reference: bool = False) -> int:
    return base + index + (REFERENCE_SEED_OFFSET if reference else 0)


def get_model(cfg, ds: Dataset, split: Split, kind: str, index: int, audit: AuditConfig,
              device: torch.device, autocast, cache_dir: Path, reference: bool = False) -> Trained:
    """Shadow / original / retrain model `index` (cached; trained here when missing). `cfg` is the
    audit's TrialConfig: data, split, model, train recipe and seeds."""
    seed = model_seed(cfg.seeds.train_seed, index, reference)
    precision = cfg.precision if device.type == "cuda" else "fp32"
    if kind == "shadow":
        held = split.forget[torch.from_numpy(shadow_members(len(split.forget), audit.seed, index))]
        key = {**oracle_key(ds, cfg.model, cfg.train, seed, precision), "kind": "shadow",
               "split": split.digest(), "held": hashlib.sha256(held.numpy().tobytes()).hexdigest()[:16]}
        return cached_train(cache_dir, key, ds, torch.cat([split.retain, held]).sort().values,
                            cfg.model, cfg.train, seed, device, autocast)
    oracle_kind = cast(Literal["original", "retrain"], kind)  # not shadow: one of the other two
    return oracle(oracle_kind, ds, split, model_name=cfg.model, recipe=cfg.train, train_seed=seed,
                  device=device, autocast=autocast, cache_dir=cache_dir, precision=precision)


# -- scores ----------------------------------------------------------------------------------------

@torch.no_grad()
def margins(model: torch.nn.Module, ds: Dataset, part: Literal["train", "val"], idx: torch.Tensor,
            batch_size: int = 1024) -> np.ndarray:
    """z_y - logsumexp_{k != y} z_k for the examples `idx` of the train or validation tensors, in
    eval mode, float64: U-LiRA's logit-scaled confidence log p_y - log(1 - p_y) and KLoM's margin."""
    x_raw, y_raw = (ds.x_train, ds.y_train) if part == "train" else (ds.x_val, ds.y_val)
    model.eval()
    out = []
    for s in range(0, len(idx), batch_size):
        i = idx[s:s + batch_size].to(x_raw.device)
        x = ds.prepare(x_raw[i])
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        z, y = model(x).float(), y_raw[i][:, None]
        out.append((z.gather(1, y).squeeze(1) - z.scatter(1, y, -math.inf).logsumexp(1)).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros(0)


def _logpdf(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)


def ulira_statistics(scores: np.ndarray, members: np.ndarray, variance: str = "global"
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out U-LiRA. scores (N, F): phi of the N unlearned shadows on the F forget examples;
    members (N, F) bool: example f was in S_k. Returns (online, offline), each (N, F): row j treats
    shadow j as the audited model with Gaussians fitted to the other N - 1. NaN where an example lacks
    an IN or an OUT score among the others (or two of each, for per-example variances)."""
    s, m = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    if s.shape != m.shape or s.ndim != 2:
        raise ValueError(f"ulira: scores {s.shape} and members {m.shape} must be the same (N, F)")
    online, offline = np.full(s.shape, np.nan), np.full(s.shape, np.nan)
    groups = {}
    for name, g in (("in", m), ("out", ~m)):
        groups[name] = (g.sum(0).astype(float), (s * g).sum(0), (s * s * g).sum(0), g)
    for j in range(len(s)):
        fit = {}
        for name, (n, t, t2, g) in groups.items():
            n_j, t_j, t2_j = n - g[j], t - s[j] * g[j], t2 - s[j] ** 2 * g[j]
            with np.errstate(invalid="ignore", divide="ignore"):
                mu = t_j / n_j
                ss = np.maximum(t2_j - n_j * mu ** 2, 0.0)  # sum of squared residuals per example
                if variance == "per_example":
                    var = np.where(n_j >= 2, ss / (n_j - 1), np.nan)
                else:  # pooled over the examples that have this group
                    ok = n_j >= 1
                    dof = (n_j[ok] - 1).sum()
                    var = np.full(len(mu), ss[ok].sum() / dof if dof > 0 else np.nan)
                    var[~ok] = np.nan
            fit[name] = (mu, np.sqrt(np.maximum(var, 1e-12)))
        online[j] = _logpdf(s[j], *fit["in"]) - _logpdf(s[j], *fit["out"])
        offline[j] = -_logpdf(s[j], *fit["out"])
    return online, offline


def attack_quality(statistic: np.ndarray, labels: np.ndarray, fprs=FPRS) -> dict[str, float]:
    """AUC and TPR at the given FPRs (the largest TPR whose FPR does not exceed it) of a statistic
    where higher = 'member'; NaN entries are left out. NaN results when one class is missing."""
    x, y = np.asarray(statistic, float).ravel(), np.asarray(labels, bool).ravel()
    ok = np.isfinite(x)
    x, y = x[ok], y[ok]
    out = {"pairs": float(len(x))}
    if y.all() or not y.any():
        return {**out, "auc": math.nan, **{f"tpr@{f:g}": math.nan for f in fprs}}
    fpr, tpr, _ = roc_curve(y, x)
    out["auc"] = float(roc_auc_score(y, x))
    for f in fprs:
        out[f"tpr@{f:g}"] = float(tpr[fpr <= f].max())
    return out


def klom(p_margins: np.ndarray, q_margins: np.ndarray, bins: int = 20, clip: float = 100.0,
         floor: float = 1e-5) -> np.ndarray:
    """Per example (column), KL(p || q) of the binned margins: p from the unlearned models (rows of
    p_margins), q from the reference Retrain models (rows of q_margins). Values clipped to [-clip,
    clip]; `bins` equal-width bins over the pooled range of the column (a degenerate range gets width
    1); q floored at `floor` where p > 0, then renormalised. Returns shape (E,), all finite."""
    p = np.clip(np.asarray(p_margins, float), -clip, clip)
    q = np.clip(np.asarray(q_margins, float), -clip, clip)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(f"klom: margins {p.shape} and {q.shape} must be (N, E) and (M, E)")
    lo = np.minimum(p.min(0), q.min(0))
    width = np.maximum(p.max(0), q.max(0)) - lo
    width = np.where(width > 0, width, 1.0)

    def hist(a):  # (E, bins) frequencies; the top edge belongs to the last bin (as np.histogram)
        b = np.clip(((a - lo) / width * bins).astype(int), 0, bins - 1)
        h = np.zeros((a.shape[1], bins))
        np.add.at(h, (np.broadcast_to(np.arange(a.shape[1]), a.shape), b), 1.0)
        return h / len(a)

    hp, hq = hist(p), hist(q)
    hq = np.where(hp > 0, np.maximum(hq, floor), hq)
    hq = hq / hq.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(hp > 0, hp * np.log(hp / hq), 0.0)
    return terms.sum(1)


# -- the task a worker runs -------------------------------------------------------------------------

def run_audit_task(payload: dict[str, Any], on_epoch=None) -> dict[str, Any]:
    """Worker entry point (what a backend runs), JSON-like dicts in and out. payload:
        op: train | score;  trial: the audit's TrialConfig dict;  audit: AuditConfig dict;
        role: shadow | audited | reference (| retrain: train only);  index: k;
        config: {method, params} (not for reference);  plugin_sources: as for unlearning.tasks
    `train` makes sure the role's model is in the cache. `score` applies the configuration and
    returns the margins (forget set; KLoM's retain/validation subsets for audited and reference) and
    the relearning attack's count. A failure inside is a FAIL result with the reason."""
    t0 = time.perf_counter()
    base_out = {"node": platform.node(), "role": payload.get("role"), "index": payload.get("index")}
    try:
        load_shipped(payload.get("plugin_sources") or ())  # before the config: it may name theirs
        cfg = load_trial_config(payload["trial"])
        audit = AuditConfig(**payload["audit"])
        role, k = payload["role"], int(payload["index"])
        device = resolve_device(cfg.device)
        ds = load_dataset(cfg.data, device)
        split = make_split(ds, cfg.split, cfg.seeds.split_seed)
        autocast = autocast_factory(device, cfg.precision)
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        kind = {"shadow": "shadow", "audited": "original", "reference": "retrain", "retrain": "retrain"}[role]
        model = get_model(cfg, ds, split, kind, k, audit, device, autocast, cache,
                          reference=role == "reference")
        if payload["op"] == "train":
            return {**base_out, "state": "COMPLETE", "cached": model.cached,
                    "train_runtime_s": model.runtime_s, "total_s": time.perf_counter() - t0}
        out = _score(payload, cfg, audit, ds, split, role, k, model, device, autocast, cache)
        return {**base_out, "state": "COMPLETE", **out, "total_s": time.perf_counter() - t0}
    except Exception as e:  # noqa: BLE001 - every failure is data (a bug, a diverged model, no data)
        failure = failure_of(e)
        return {**base_out, "state": "FAIL", "failure": failure.model_dump(mode="json"),
                "retire_worker": failure.kind == FailureKind.OUT_OF_MEMORY,
                "total_s": time.perf_counter() - t0}


def _score(payload, cfg, audit: AuditConfig, ds, split, role, k, base: Trained, device, autocast,
           cache) -> dict[str, Any]:
    model, unlearn_s = base.model, 0.0
    conf = payload.get("config") or {"method": "original", "params": {}}
    method = conf["method"]
    if role != "reference" and method != "original":
        if get_method(method).from_oracle:  # Retrain: shadow k and original k alike
            model = get_model(cfg, ds, split, "retrain", k, audit, device, autocast, cache).model
        else:
            tcfg = load_trial_config({**payload["trial"], "method": method, "params": conf["params"]})
            forget = split.forget
            if role == "shadow":
                forget = forget[torch.from_numpy(shadow_members(len(forget), audit.seed, k))]
            u = unlearn(tcfg, base, ds, forget, split.retain, split.val, device, autocast,
                        seed=cfg.seeds.unlearn_seed + k)
            assert u.model is not None  # unlearn returns the model
            model, unlearn_s = u.model, u.runtime_s
    out: dict[str, Any] = {"unlearn_s": unlearn_s, "forget": margins(model, ds, "train", split.forget)}
    if role != "shadow":
        if "klom" in audit.kinds:
            out["retain"] = margins(model, ds, "train", klom_subset(split.retain, audit.klom_examples,
                                                                    audit.seed, 1))
            out["val"] = margins(model, ds, "val", klom_subset(split.val, audit.klom_examples,
                                                               audit.seed, 2))
        if "relearn" in audit.kinds:
            original = get_model(cfg, ds, split, "original", k, audit, device, autocast, cache)
            target = audit.relearn.target * train_accuracy(original.model, ds, split.forget)
            r = relearn_time(model, ds, split.forget, target, audit.relearn, device, autocast)
            out.update(relearn_steps=r.steps, relearn_capped=r.capped, relearn_seconds=r.seconds)
    return {key: (v.tolist() if isinstance(v, np.ndarray) else v) for key, v in out.items()}


# -- from the task outputs to the audit's numbers ------------------------------------------------

def assess(audit: AuditConfig, n_forget: int, shadow: dict[int, list[float]] | None,
           audited: dict[int, dict[str, Any]] | None, reference: dict[int, dict[str, Any]] | None
           ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """One configuration's summary and per-example arrays from its tasks' outputs (by model index;
    failed models left out). Summary keys: ulira_* (online), ulira_offline_*, klom_<set>_mean/_p95,
    relearn_steps (mean over models), relearn_steps_retrain, relearn_capped, ain, n_* counts."""
    summary: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    if "ulira" in audit.kinds and shadow:
        ks = sorted(shadow)
        scores = np.array([shadow[k] for k in ks], dtype=float)
        members = np.array([shadow_members(n_forget, audit.seed, k) for k in ks])
        online, offline = ulira_statistics(scores, members, audit.variance)
        for name, stat in (("ulira", online), ("ulira_offline", offline)):
            aq = attack_quality(stat, members)
            summary.update({f"{name}_auc": aq["auc"], f"{name}_tpr_at_1pct": aq["tpr@0.01"],
                            f"{name}_tpr_at_0.1pct": aq["tpr@0.001"]})
        summary["ulira_pairs"] = attack_quality(online, members)["pairs"]
        summary["n_shadows"] = float(len(ks))
        per.update(shadows=np.array(ks), members=members, score=scores, lr_online=online,
                   lr_offline=offline)
    if audited and reference:
        ka, kr = sorted(audited), sorted(reference)
        if "klom" in audit.kinds:
            for part in ("forget", "retain", "val"):
                p = np.array([audited[k][part] for k in ka], dtype=float)
                q = np.array([reference[k][part] for k in kr], dtype=float)
                if p.size == 0 or q.size == 0 or p.shape[1] == 0:
                    continue
                v = klom(p, q, bins=audit.klom_bins)
                summary[f"klom_{part}_mean"] = float(v.mean())
                summary[f"klom_{part}_p95"] = float(np.quantile(v, 0.95))
                per[f"klom_{part}"] = v
                per[f"margin_{part}"], per[f"margin_ref_{part}"] = p, q
        if "relearn" in audit.kinds:
            rt_u = np.array([audited[k]["relearn_steps"] for k in ka], dtype=float)
            rt_r = np.array([reference[k]["relearn_steps"] for k in kr], dtype=float)
            summary.update(relearn_steps=float(rt_u.mean()), relearn_steps_std=float(rt_u.std()),
                           relearn_steps_retrain=float(rt_r.mean()),
                           relearn_capped=float(np.mean([audited[k]["relearn_capped"] for k in ka])),
                           ain=ain(float(rt_u.mean()), float(rt_r.mean())))
        summary["n_audited"], summary["n_reference"] = float(len(ka)), float(len(kr))
    return summary, per
