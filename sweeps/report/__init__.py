"""How to report a sweep, from its run directory alone (no data set, Ray or GPU): the analysis
(configurations, Pareto front, hypervolume, picks), the field's tables, plots, comparisons of
sweeps, the audit's record, and report/ on disk. Reads the record layer (sweeps.results,
sweeps.spec, sweeps.catalogue); nothing there imports from here.

    analysis       the numbers: per configuration, front, hypervolume, selection rules, top_configs
    tables         the field's table (markdown, LaTeX, CSV, JSON), the front table, beside the paper
    plots          front.png/.html, history.png, epochs.png, the comparison plots
    compare        several sweeps on one set of axes and one reference point
    summary        the one-screen summary, `analyze --json`, and write_report (report/ on disk)
    audit_results  the per-example audit's record (runs/<name>/audit/) and its report section
    units          axis labels and the hypervolume's reference point, from the metric catalogue
"""
