"""The metric catalogue: every metric a trial records or a sweep may optimise, in one place.

Everything else derives from it: the spec's checks (which metrics exist, which need Retrain or the
relearning attack), the Parquet schema's metric columns (sweeps/results.py), axis labels and the
hypervolume's default reference point (sweeps/report/units.py), the field's table
(sweeps/report/tables.py), plots, and the table in docs/metrics.md (`python -m sweeps.catalogue`
prints it; tests/test_catalogue.py checks the doc against it).

Order matters: the record's metric columns come in catalogue order (records written before must
read the same), and so do the field's table columns. A leaf: imports nothing of ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict


@dataclass(frozen=True)
class Metric:
    """One metric. Percent metrics are on the field's 0-100 scale."""

    name: str
    label: str  # words, for axes and hover boxes ("test accuracy TA")
    description: str  # what it measures; docs/metrics.md's table shows it
    unit: str = ""  # "%", "pp" (percentage points), "s", "steps", ...
    # the natural range: the hypervolume's default reference point is its worst end (so sweeps
    # compare) and plots keep within it; None = no bound declared (the reference comes from the data)
    lo: float | None = None
    hi: float | None = None
    better: Literal["minimize", "maximize"] | None = None  # None: closest to Retrain, or no agreement
    retrain: bool = False  # needs the Retrain model: a spec using it has the "oracle" selection rule
    relearn: bool = False  # needs the relearning attack (base.eval.relearn)
    objective: bool = True  # may be a spec's objective, constraint or select metric
    # where the record keeps it: "metrics" = the block of metric columns (in catalogue order);
    # "run" = a column of the run itself, beside total_s (runtime_s)
    column: Literal["metrics", "run"] = "metrics"
    reference: bool = False  # Original's and Retrain's values recorded too (original_<m>, retrain_<m>)
    per_epoch: bool = False  # in the history after each epoch (base.eval.eval_every)
    table: str | None = None  # its column in the field's table (SalUn's Table 1 layout)
    gap: bool = False  # the field's table shows |mean - Retrain's mean| beside it
    drop_of: str | None = None  # defined as Original's <drop_of> minus the trial's (utility_drop)


class _Scale(TypedDict):
    """Shared keyword arguments of `Metric` (typed, so `**PCT` is checked field by field)."""

    unit: str
    lo: float
    hi: float


class _Gap(_Scale):
    better: Literal["minimize", "maximize"]


PCT: _Scale = dict(unit="%", lo=0.0, hi=100.0)
GAP: _Gap = dict(unit="pp", lo=0.0, hi=100.0, better="minimize")

CATALOGUE: tuple[Metric, ...] = (
    Metric("unlearn_acc", "unlearning accuracy UA", "100 − accuracy on the forget set", **PCT,
           reference=True, per_epoch=True, table="UA", gap=True),
    Metric("retain_acc", "retain accuracy RA", "accuracy on the retain set", **PCT, better="maximize",
           reference=True, per_epoch=True, table="RA", gap=True),
    Metric("test_acc", "test accuracy TA", "accuracy on the test set", **PCT, better="maximize",
           reference=True, per_epoch=True, table="TA", gap=True),
    Metric("mia_efficacy", "MIA-efficacy",
           "the SVC confidence attack of the SalUn / l1-sparse tables: % of forget examples it calls "
           "non-members", **PCT, reference=True, table="MIA", gap=True),
    Metric("forget_acc", "forget accuracy", "accuracy on the forget set (100 − UA)", **PCT,
           reference=True),
    Metric("val_acc", "validation accuracy", "accuracy on the validation set", **PCT,
           better="maximize", reference=True),
    Metric("avg_gap", "avg. gap to Retrain",
           "mean |UA, RA, TA, MIA − Retrain's| (the SalUn / l1-sparse tables' Avg. Gap)", **GAP,
           retrain=True, table="Avg. gap"),
    Metric("forget_gap", "forget gap to Retrain", "mean of |UA − UA_r| and |MIA − MIA_r|", **GAP,
           retrain=True),
    Metric("utility_drop", "TA drop from Original", "Original's TA − TA", unit="pp", lo=-100.0, hi=100.0,
           better="minimize", drop_of="test_acc"),
    Metric("forget_val_gap", "|forget acc. − val. acc.|",
           "|forget accuracy − validation accuracy|: forget examples should look like unseen ones "
           "(how the EUPMU authors tuned, blind to Retrain)", **GAP),
    Metric("retain_examples_seen", "retain examples seen",
           "distinct retain examples the method was handed (counted by the data door, not claimed)",
           lo=0.0, better="minimize"),
    Metric("mia_seconds", "MIA attack time", "wall time of the SVC attack (after the timed unlearning)",
           unit="s", objective=False),
    Metric("tow", "Tug of War ToW",
           "(1 − |A_f − A_f^r|/100)(1 − |RA − RA^r|/100)(1 − |TA − TA^r|/100), A_f = forget "
           "accuracy, r = Retrain; in [0, 1], not percent; Retrain scores exactly 1 (Zhao et al., "
           "NeurIPS 2024)", better="maximize", retrain=True),
    Metric("tow_mia", "ToW-MIA", "ToW with the forget term 1 − |MIA − MIA^r|/100", better="maximize",
           retrain=True),
    Metric("relearn_steps", "relearn time RT",
           "optimizer steps a copy of the model needs to relearn the forget set (the relearning "
           "attack, `base.eval.relearn`)", unit="steps", relearn=True),
    Metric("relearn_capped", "relearn attack capped",
           "1 when the relearning attack hit its step cap (a censored count)", objective=False),
    Metric("relearn_seconds", "relearn attack time", "wall time of the relearning attack", unit="s",
           objective=False),
    Metric("ain", "anamnesis index AIN",
           "(relearn_steps + 0.01) / (Retrain's relearn_steps + 0.01): about 1 = relearns like a model "
           "that never saw the forget set (Chundawat et al., IEEE TIFS 2023)", retrain=True,
           relearn=True),
    Metric("du_mia", "DeepUnlearn MIA accuracy",
           "DeepUnlearn's loss attack, forget vs validation examples (`base.eval.du_mia`): its "
           "accuracy", unit="%"),
    Metric("indiscernibility", "indiscernibility",
           "100 × (1 − |du_mia − 50|/50): 100 when the attack is at chance", unit="%",
           better="maximize", reference=True),
    Metric("du_indisc", "DeepUnlearn indiscernibility term",
           "100 − indiscernibility (DeepUnlearn's fourth objective term; no Retrain needed)", unit="%",
           better="minimize"),
    Metric("du_retain", "DeepUnlearn retain term", "|RA − RA_r| / 3 (a DeepUnlearn objective term)",
           unit="pp", better="minimize", retrain=True),
    Metric("du_forget", "DeepUnlearn forget term",
           "|forget acc. − Retrain's| / 3 (a DeepUnlearn objective term)", unit="pp",
           better="minimize", retrain=True),
    Metric("du_val", "DeepUnlearn validation term",
           "|val. acc. − Retrain's| / 3 (a DeepUnlearn objective term)", unit="pp", better="minimize",
           retrain=True),
    Metric("du_norm", "DeepUnlearn score",
           "Euclidean norm of du_retain, du_forget, du_val, du_indisc: DeepUnlearn's selection score "
           "(× 100), smallest wins", better="minimize", retrain=True),
    Metric("rte", "run-time efficiency RTE",
           "DeepUnlearn's RTE = t_Retrain / t_method: how many times faster than retraining "
           "(Retrain = 1). Not the SalUn tables' RTE column, which is a run time: `runtime_s`",
           unit="×", better="maximize", retrain=True),
    Metric("runtime_s", "unlearning run time",
           "wall time of the unlearning procedure (one-time process costs excluded); the SalUn / "
           "l1-sparse tables' \"RTE\" column is this, in minutes", unit="s", lo=0.0, better="minimize",
           column="run", table="Time (s)"),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOGUE}


def get(name: str) -> Metric:
    """The catalogue's entry, or a bare one for a column it does not list (its name as its label)."""
    return BY_NAME.get(name) or Metric(name, name, "", objective=False)


def markdown_table() -> str:
    """The catalogue as the markdown table in docs/metrics.md."""
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    def needs(m: Metric) -> str:
        return ", ".join(n for n, on in (("Retrain", m.retrain), ("`eval.relearn`", m.relearn)) if on) or "—"

    def rng(m: Metric) -> str:
        return "—" if m.lo is None and m.hi is None else \
            f"{'−∞' if m.lo is None else f'{m.lo:g}'} … {'∞' if m.hi is None else f'{m.hi:g}'}"

    def where(m: Metric) -> str:
        parts = ["per epoch" if m.per_epoch else "", "+ Original, Retrain" if m.reference else "",
                 f"table: {m.table}" if m.table else "", "not an objective" if not m.objective else ""]
        return "; ".join(p for p in parts if p) or "—"

    lines = ["| metric | label | unit | better | natural range | needs | recorded | meaning |",
             "|---|---|---|---|---|---|---|---|"]
    for m in CATALOGUE:
        better = {"maximize": "higher", "minimize": "lower"}.get(m.better or "", "—")
        lines.append(f"| `{m.name}` | {esc(m.label)} | {m.unit or '—'} | {better} | {rng(m)} | "
                     f"{needs(m)} | {where(m)} | {esc(m.description)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
