"""Reporting what a run measured, for people: Markdown / CSV tables, ROC and histogram plots, galleries of input /
synthesis pairs and the self-contained ``report.html``. Only presentation; no metric is computed here."""
