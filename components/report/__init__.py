"""Report step: turn the evaluated models of one run into report.html, report.md and summary.json.

    summary.py     reads and checks each result.json (+ history.csv); builds summary.json
    tables.py      the comparison and model registry tables, shared by both pages and by the
                   text table `cnnpipe run` ends with
    markdown.py    report.md, the KFP Markdown artifact
    html_page.py   report.html, self-contained (inline CSS, embedded PNG plots)
    plots.py       the matplotlib figures, rendered straight to PNG bytes
    decisions.py   which split chose each model's epoch, and the registry's decision, in words

`write_report_files` is the entry point; the numbers read the same here, in the console and in the CLI
because all of them format through components/formatting.py.
"""

from __future__ import annotations

import json
import os

from components import atomic
from components.artifacts import REPORT_HTML_FILE, REPORT_MARKDOWN_FILE, SUMMARY_FILE
from components.errors import UserError
from components.manifest import DatasetManifest
from components.report.html_page import render_html
from components.report.markdown import render_markdown
from components.report.summary import build_summary, read_result, reference_applies, sort_by_accuracy

__all__ = ["write_report_files", "reference_applies"]


def write_report_files(result_dirs: list[str], output_dir: str, manifest: DatasetManifest, run_config: dict) -> dict:
    """Write report.html, report.md and summary.json for one run into output_dir.

    Args:
        result_dirs: evaluate output directories, each holding result.json and history.csv.
        output_dir: directory for the three report files (created if missing).
        manifest: the dataset manifest (components.manifest.read(...)) the models were trained on.
        run_config: the resolved run settings; at least {"preset", "dataset"}. Each model's
            registry decision is the "promotion" block the publish step stored in its result.json.

    Returns:
        The summary dict written to summary.json.
    """
    if isinstance(result_dirs, (str, bytes, os.PathLike)):
        raise UserError(
            f"result_dirs must be a list of directories, got the single path {result_dirs!r}; wrap it in a list"
        )
    if not result_dirs:
        raise UserError("result_dirs is empty; pass at least one evaluate output directory (with result.json)")
    results = sort_by_accuracy([read_result(result_dir) for result_dir in result_dirs])
    summary = build_summary(results, manifest, run_config)
    files = {
        SUMMARY_FILE: json.dumps(summary, indent=2, allow_nan=False) + "\n",
        REPORT_MARKDOWN_FILE: render_markdown(summary, manifest, run_config),
        REPORT_HTML_FILE: render_html(results, summary, manifest, run_config),
    }
    # Everything is rendered before the first write, so a failed plot leaves no report file behind.
    atomic.write_files(output_dir, files)
    return summary
