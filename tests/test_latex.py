"""The LaTeX a paper takes as it is: the field's table and the audit's summary fit a one-column
article. Compiled with pdflatex where it is installed (the natural width of a typical table within
the text width; no `Overfull \\hbox` even for an extreme one, which is scaled to the line);
everywhere, a column budget estimated from the cells' widths at the table's font size."""
from __future__ import annotations

import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.runner import run_sweep
from sweeps.report import audit_results as AR
from sweeps.report.analysis import FIELD_METRICS, GAPPED, analyze
from sweeps.report.tables import export, to_latex
from sweeps.spec import load_spec
from tests.sweep_util import fake_task, small_spec

TEXTWIDTH_PT = 345.0  # \documentclass{article} at 10pt: the one-column text width
# \footnotesize (8pt Computer Modern): a digit is 0.5em; bold ones are 0.575em; a subscript is set
# at 6pt. Letters average about 0.5em too. Deliberately on the wide side.
CHAR_PT, BOLD_PT, SUB_PT = 4.0, 4.6, 3.4


def cell_width(cell: str) -> float:
    """An over-estimate of a cell's printed width in points."""
    w = 0.0
    for sub in re.findall(r"\$_\{(.*?)\}\$", cell):
        w += SUB_PT * len(sub.replace(r"\pm", "±"))
    cell = re.sub(r"\$_\{.*?\}\$", "", cell)
    for bold in re.findall(r"\\textbf\{(.*?)\}", cell):
        w += BOLD_PT * len(bold)
    cell = re.sub(r"\\textbf\{.*?\}", "", cell)
    cell = re.sub(r"\\multicolumn\{\d+\}\{\w\}\{(.*?)\}", "", cell)  # spans several columns
    cell = re.sub(r"\$(.*?)\$", r"\1", cell).replace(r"\%", "%").replace(r"\_", "_").replace("\\", "")
    return w + CHAR_PT * len(cell.strip())


def tabular_width(tex: str) -> list[float]:
    """The estimated width of each tabular in `tex` (cells + 2 tabcolsep per column)."""
    out = []
    for body in re.findall(r"\\begin\{tabular\}\{(\w+)\}(.*?)\\end\{tabular\}", tex, flags=re.S):
        spec, rows = body
        sep = float(re.search(r"tabcolsep\}\{([\d.]+)pt", tex).group(1)) if "tabcolsep" in tex else 6.0
        widths = [0.0] * len(spec)
        for row in rows.split(r"\\"):
            row = re.sub(r"\\(resizebox.*?%|toprule|midrule|bottomrule|cmidrule\(lr\)\{[\d-]+\}"
                         r"|addlinespace\[\dpt\])", "", row)
            for i, cell in enumerate(row.split("&")[:len(spec)]):
                widths[i] = max(widths[i], cell_width(cell))
        out.append(sum(widths) + 2 * sep * len(spec))
    return out


def pdflatex(tex: str, tmp_path) -> tuple[list[str], list[float]]:
    """pdflatex a one-column article holding `tex`: (its `Overfull \\hbox` lines, the natural width in
    points of each tabular, measured in a box before any scaling)."""
    measured = tex.replace(r"\begin{tabular}", r"\setbox0\hbox{\begin{tabular}").replace(
        r"\end{tabular}", r"\end{tabular}}\typeout{TABULAR WIDTH \the\wd0}\unhbox0")
    (tmp_path / "t.tex").write_text(measured)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                                      "\\usepackage{graphicx}\n\\begin{document}\n\\input{t}\n\\end{document}\n")
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-2000:]
    return ([ln for ln in p.stdout.splitlines() if "Overfull \\hbox" in ln],
            [float(w) for w in re.findall(r"TABULAR WIDTH ([\d.]+)pt", p.stdout)])


need_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed "
                                   "(apt-get install texlive-latex-base texlive-latex-recommended)")


def field_table(mean: float, std: float, gap: float, time: tuple[float, float]) -> pd.DataFrame:
    """A field's table of both rules with every registered method (the longest names), each cell
    with a std and a gap."""
    from unlearning.methods import all_methods

    rows = []
    for sel in ("blind", "oracle"):
        for i, name in enumerate(["Retrain", "Original", *all_methods()]):
            row = {"selection": sel, "rule": "x", "method": name, "trial": i + 1000, "n": 10}
            for m in FIELD_METRICS:
                row[m], row[f"{m}_std"] = time if m == "runtime_s" else (mean, std)
                if m in GAPPED:
                    row[f"{m}_gap"] = gap
            rows.append(row)
    return pd.DataFrame(rows)


TYPICAL = dict(mean=94.21, std=1.33, gap=12.52, time=(56.7, 4.2))
EXTREME = dict(mean=100.0, std=10.0, gap=99.99, time=(12345.6, 1234.5))


def test_the_field_table_keeps_to_a_column_budget():
    # before: one tabular of 15 columns (both rules side by side), 367pt too wide for the page
    tex = to_latex(field_table(**TYPICAL), captions={"blind": "b", "oracle": "o"}, label="tab:x")
    assert tex.count(r"\begin{table}") == 2  # one per selection rule, not side by side
    assert all(spec == "l" + "r" * 7 for spec in re.findall(r"\\begin\{tabular\}\{(\w+)\}", tex))
    widths = tabular_width(tex)
    assert len(widths) == 2 and max(widths) <= TEXTWIDTH_PT, widths


@need_pdflatex
def test_the_field_table_fits_a_one_column_article_when_compiled(tmp_path):
    typical = to_latex(field_table(**TYPICAL), captions={"blind": "b", "oracle": "o"}, label="tab:x")
    overfull, widths = pdflatex(typical, tmp_path)
    assert overfull == [] and len(widths) == 2 and max(widths) <= TEXTWIDTH_PT, widths  # unscaled
    # too wide by nature (six-digit run times): scaled to the line, never into the margin
    extreme = to_latex(field_table(**EXTREME), captions={"blind": "b", "oracle": "o"}, label="tab:x")
    overfull, widths = pdflatex(extreme, tmp_path)
    assert overfull == [] and max(widths) > TEXTWIDTH_PT


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """A finished fake sweep with an audit summary beside it (three configurations and the two
    baselines; Retrain's relearn time 0, as on random forgetting)."""
    d = tmp_path_factory.mktemp("audited")
    spec = load_spec(small_spec(n_trials=4, seeds=[0, 1]))
    run_sweep(spec, d, fn=fake_task, log=None)
    summary = []
    for rank, (trial, method) in enumerate([(3, "neggrad_plus"), (12, "l1_sparse"), (2, "ft")]):
        summary.append({"config_id": f"c{rank}", "rank": rank, "layer": 0, "trial_number": trial,
                        "method": method, "params_json": "{}", "params": "lr=0.0123, epochs=3",
                        "n_failed": 0, "ulira_auc": 0.512, "ulira_tpr_at_1pct": 0.011,
                        "ulira_tpr_at_0.1pct": 0.001, "ulira_offline_auc": 0.5, "klom_forget_mean": 1.234,
                        "klom_retain_mean": 0.123, "klom_val_mean": 0.456, "relearn_steps": 1.5,
                        "relearn_steps_retrain": 0.0, "ain": 151.0})
    for b in ("original", "retrain"):
        summary.append({"config_id": b, "rank": None, "layer": None, "trial_number": None, "method": b,
                        "params_json": "{}", "params": "", "n_failed": 0, "ulira_auc": 0.9,
                        "relearn_steps": 0.0, "relearn_steps_retrain": 0.0, "ain": 1.0})
    AR.write_results(d, [], summary, {"shadows": 16, "kinds": ["ulira", "klom", "relearn"], "wall_s": 12.0,
                                      "sweep": spec.name})
    return d, spec


def test_the_audit_summary_names_trials_and_gives_the_ain_caveat(audited):
    d, _ = audited
    md = AR.audit_section(d)
    assert "| trial 3 (top 1) neggrad_plus: lr=0.0123, epochs=3 |" in md
    assert "| retrain |" in md and "AIN caveat: RT Retrain is 0" in md and "100 × RT + 1" in md


def test_export_latex_of_an_audited_run_is_a_clean_table(audited, capsys):
    d, _ = audited
    assert main(["export", str(d), "--format", "latex"]) == 0
    tex = capsys.readouterr().out
    audit = tex[tex.index("% the per-example audit"):]
    # no DataFrame dump: no hashes, no params_json, integers as integers, one tabular that fits
    assert "config_id" not in audit and "params\\_json" not in audit and "c0" not in audit
    assert re.search(r"^3: neggrad\\_plus & 0\.512 ", audit, flags=re.M)
    assert "AIN caveat" in audit and max(tabular_width(audit)) <= TEXTWIDTH_PT, tabular_width(audit)
    assert max(tabular_width(tex)) <= TEXTWIDTH_PT


@need_pdflatex
def test_export_latex_of_an_audited_run_compiles_within_the_text_width(audited, capsys, tmp_path):
    d, _ = audited
    assert main(["export", str(d), "--format", "latex"]) == 0
    overfull, widths = pdflatex(capsys.readouterr().out, tmp_path)
    assert overfull == [] and len(widths) == 3 and max(widths) <= TEXTWIDTH_PT, widths


def test_the_report_table_tex_is_the_export(audited):
    d, spec = audited
    a = analyze(d, spec)
    tex = export(a, "latex")
    assert r"\label{tab:t-blind}" in tex and r"\label{tab:t-oracle}" in tex
    assert not math.isnan(max(tabular_width(tex)))
