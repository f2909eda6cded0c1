"""The comparison report: every method's metrics side by side, with paired tests, the sources' numbers and plots.

`inputs` reads the metrics JSON files, the per-item outcome files and DVCLive curves (each checked
against `posttrain.schemas`), `tables` turns them into rows with paired tests and CSV, `markdown`
renders `report.md`, `plots` draws the figures. The caller names every folder and file.
"""
