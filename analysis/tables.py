"""Regenerate the paper's Tables 1-5 (and an ablation table) from MLflow, beside the paper's numbers.

    python analysis/tables.py [--experiment NAME] [--results DIR] [--out DIR] [--tracking-uri URI]

Reads the sweep's own store (RESULTS/mlflow.db) unless --tracking-uri is given. Writes
``tableN.md``/``.csv``/``.tex`` per table, the run lists (``runs``, ``forensics_runs``), PNG plots,
``all_tables.md`` and a self-contained
``report.html`` into --out (default RESULTS/tables/NAME); prints the paths.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import logging
import os
import urllib.parse
from dataclasses import dataclass

import pandas as pd
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from analysis import audit, controls, plots, report, run_list, verdict
from analysis.paper import PaperNumbers, load_paper
from analysis.runs import COMMANDS, full_data, load_cells, ordered, paper_method, select
from raydistill.pipeline import SET_SEED_OFFSET
from raydistill.protocols import STUDENT_SEED_OFFSET
from raydistill.tracking import MACHINE, check_reachable, local_store

DASH = "–"
BINARY_METRICS = ("accuracy", "sensitivity", "specificity")
COMPETITORS = (("kmeans", "Ours"), ("kip-scatternet", "KIP-ScatterNet"), ("rtp", "RTP"))
LEGEND = (
    "ours = mean ± sample std (ddof=1) over seeds, in percent (no std when n = 1); n = number of finished "
    "runs; paper = the paper's printed value; diff = ours − paper in percentage points; – = no run or no value."
)


@dataclass(frozen=True)
class Table:
    """One output table: string cells, row keys in the index, columns flat or (group, field)."""

    name: str
    title: str
    notes: str
    frame: pd.DataFrame


def summary(fractions: pd.Series) -> tuple[str, int, float | None]:
    """``"mean ± std"`` in percent of the non-NA fractions, their count and the mean."""
    pct = 100 * fractions.dropna()
    if pct.empty:
        return DASH, 0, None
    mean = float(pct.mean())
    return (f"{mean:.2f}" if len(pct) == 1 else f"{mean:.2f} ± {pct.std(ddof=1):.2f}"), len(pct), mean


def versus(fractions: pd.Series, paper: float | None) -> dict[str, str]:
    """Fields ours / n / paper / diff for one table cell."""
    text, n, mean = summary(fractions)
    return {"ours": text, "n": str(n), "paper": DASH if paper is None else f"{paper:.2f}", "diff": _diff(mean, paper)}


def _diff(ours: float | None, paper: float | None) -> str:
    return DASH if ours is None or paper is None else f"{ours - paper:+.2f}"


def best_model(runs: pd.DataFrame) -> tuple[str, float | None]:
    """Summary of the model with the highest mean accuracy among ``runs``, naming it and n."""
    means = runs.groupby("model")["accuracy"].mean().dropna()
    if means.empty:
        return DASH, None
    text, n, mean = summary(select(runs, model=means.idxmax())["accuracy"])
    return f"{text} (n={n}, {means.idxmax()})", mean


def _ints(values: pd.Series) -> set[int]:
    return {int(v) for v in values.dropna()}


def _frame(rows: dict[tuple, dict], names: list[str]) -> pd.DataFrame:
    columns = list(next(iter(rows.values())))
    return pd.DataFrame(
        [list(row.values()) for row in rows.values()],
        index=pd.MultiIndex.from_tuples(list(rows), names=names),
        columns=pd.MultiIndex.from_tuples(columns) if isinstance(columns[0], tuple) else pd.Index(columns),
    )


def epoch_table(cells: pd.DataFrame, paper: PaperNumbers, table: int, exclude: set[str]) -> Table:
    """Tables 1 and 2: paper-method accuracy per dataset x model, one column group per epoch count."""
    ref = paper.rows(table=table)
    ipc = int(ref["ipc"].iloc[0])
    runs = select(paper_method(cells), ipc=ipc)
    runs = runs[~runs["dataset_label"].isin(exclude)]
    keys = ordered(
        zip(ref["dataset"], ref["model"], strict=True), zip(runs["dataset_label"], runs["model"], strict=True)
    )
    epochs = sorted(_ints(ref["epochs"]) | _ints(runs["student_epochs"]))
    rows = {}
    for dataset, model in keys:
        mine = select(runs, dataset_label=dataset, model=model)
        rows[(dataset, model)] = {
            (str(e), field): text
            for e in epochs
            for field, text in versus(
                select(mine, student_epochs=e)["accuracy"],
                paper.value(table=table, dataset=dataset, model=model, method="kmeans", ipc=ipc, epochs=e),
            ).items()
        }
    title = f"Table {table}: test accuracy after training on {ipc} distilled images per class"
    notes = f"Columns: student epochs. Runs: method kmeans, modifier grad-l1, protocol paper, ipc {ipc}. {LEGEND}"
    return Table(f"table{table}", title, notes, _frame(rows, ["dataset", "model"]))


def table3(cells: pd.DataFrame, paper: PaperNumbers, exclude: set[str]) -> Table:
    """Table 3: Baseline model trained on the full training set vs on 10 distilled images per class."""
    ref = paper.rows(table=3)
    groups = (
        ("full training set", select(full_data(cells), model="baseline"), "full", None),
        ("distilled (ipc 10)", select(paper_method(cells), model="baseline", ipc=10), "kmeans", 10),
    )
    both = pd.concat([g[1] for g in groups])
    both = both[~both["dataset_label"].isin(exclude)]
    epochs = sorted(_ints(ref["epochs"]) | _ints(both["student_epochs"]))
    rows = {}
    for dataset in ordered(ref["dataset"], both["dataset_label"]):
        for e in epochs:
            rows[(dataset, e)] = {
                (group, field): text
                for group, runs, method, ipc in groups
                for field, text in versus(
                    select(runs, dataset_label=dataset, student_epochs=e)["accuracy"],
                    paper.value(table=3, dataset=dataset, model="baseline", method=method, ipc=ipc, epochs=e),
                ).items()
            }
    title = "Table 3: Baseline model, full training set vs 10 distilled images per class"
    notes = f"Full: method full, protocol paper. Distilled: kmeans + grad-l1, protocol paper. {LEGEND}"
    return Table("table3", title, notes, _frame(rows, ["dataset", "epochs"]))


def _n1_n2(value: float, epochs: object) -> str:
    """The paper's N1/N2 notation: accuracy / epochs ("NA" where not reported)."""
    return f"{value:.2f}/{'NA' if pd.isna(epochs) else int(epochs)}"


def table4(cells: pd.DataFrame, paper: PaperNumbers, exclude: set[str]) -> Table:
    """Table 4: the paper's Ours / KIP-ScatterNet / RTP as quoted, beside our best model's accuracy."""
    ours = paper_method(cells)
    ours = ours[~ours["dataset_label"].isin(exclude)]
    rows = {}
    for (dataset, ipc), quoted in paper.rows(table=4).groupby(["dataset", "ipc"], sort=False):
        quoted = quoted.set_index("method")
        row = {
            f"{label} N1/N2 (paper)": _n1_n2(quoted.loc[m, "value"], quoted.loc[m, "epochs"])
            for m, label in COMPETITORS
        }
        target = float(quoted.loc["kmeans", "value"])
        mine = select(ours, dataset_label=dataset, ipc=int(ipc))
        largest = max(_ints(mine["student_epochs"]), default=None)
        at_paper, mean_paper = best_model(select(mine, student_epochs=int(quoted.loc["kmeans", "epochs"])))
        at_largest, mean_largest = (DASH, None) if largest is None else best_model(select(mine, student_epochs=largest))
        row |= {
            "ours @ paper N2": at_paper,
            "diff vs Ours @ paper N2": _diff(mean_paper, target),
            "largest epochs run": DASH if largest is None else str(largest),
            "ours @ largest epochs": at_largest,
            "diff vs Ours @ largest epochs": _diff(mean_largest, target),
        }
        rows[(dataset, int(ipc))] = row
    title = "Table 4: comparison with KIP-ScatterNet and RTP (accuracy in percent / epochs N2)"
    notes = (
        "Paper columns quote the paper (N1/N2 = accuracy/epochs, NA = not reported; the paper names no model "
        "for Ours). "
        "'ours @ paper N2': our paper-method runs at the epochs of the paper's Ours; 'ours @ largest epochs': "
        "at the largest student_epochs we ran for that row (column 'largest epochs run'). Each shows the model "
        f"with the highest mean accuracy (named, with n); diff is against the paper's Ours. {LEGEND}"
    )
    return Table("table4", title, notes, _frame(rows, ["dataset", "ipc"]))


def table5(cells: pd.DataFrame, paper: PaperNumbers, label: str) -> Table:
    """Table 5: binary (OCID) set, ResNet34: accuracy, sensitivity, specificity, full vs distilled."""
    runs = select(cells, dataset_label=label, model="resnet34")
    groups = (
        ("entire dataset", full_data(runs), "full", None),
        ("distilled (ipc 10)", select(paper_method(runs), ipc=10), "kmeans", 10),
    )
    epochs = _ints(paper.rows(table=5)["epochs"]) | _ints(pd.concat([g[1] for g in groups])["student_epochs"])
    rows = {
        (e, metric): {
            (group, field): text
            for group, mine, method, ipc in groups
            for field, text in versus(
                select(mine, student_epochs=e)[metric],
                paper.value(table=5, dataset="ocid", model="resnet34", method=method, ipc=ipc, epochs=e, metric=metric),
            ).items()
        }
        for e in sorted(epochs)
        for metric in BINARY_METRICS
    }
    title = f"Table 5: {label} with ResNet34, entire dataset vs 10 distilled images per class"
    notes = f"Runs with dataset_label {label}; paper values are the paper's OCID numbers. {LEGEND}"
    return Table("table5", title, notes, _frame(rows, ["epochs", "metric"]))


def ablation(cells: pd.DataFrame) -> Table | None:
    """Accuracy of every selection method + modifier, or ``None`` if only the paper's method ran."""
    runs = cells[cells["method"] != "full"]
    if runs.index.difference(paper_method(runs).index).empty:
        return None
    runs = runs.assign(selection=runs["method"] + "+" + runs["modifier"].fillna("none"))
    columns = ordered(["kmeans+grad-l1"], runs["selection"])
    keys = ["dataset_label", "model", "ipc", "student_epochs", "protocol"]
    rows = {}
    for key, group in runs.groupby(keys, dropna=False):
        rows[key] = {}
        for selection in columns:
            text, n, _ = summary(select(group, selection=selection)["accuracy"])
            rows[key][selection] = text if n == 0 else f"{text} (n={n})"
    title = "Ablation: test accuracy by selection method + image modifier"
    notes = f"Columns: method+modifier; rows: dataset, model, ipc, student epochs, protocol. {LEGEND}"
    return Table("ablation", title, notes, _frame(rows, ["dataset", "model", "ipc", "epochs", "protocol"]))


def build_tables(cells: pd.DataFrame, paper: PaperNumbers, binary_dataset: str = "ocid") -> list[Table]:
    """Tables 1-5, plus the ablation table when runs other than the paper's method exist."""
    exclude = {binary_dataset}
    tables = [
        epoch_table(cells, paper, 1, exclude),
        epoch_table(cells, paper, 2, exclude),
        table3(cells, paper, exclude),
        table4(cells, paper, exclude),
        table5(cells, paper, binary_dataset),
    ]
    extra = ablation(cells)
    return tables + ([extra] if extra is not None else [])


def flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns joined as ``"group: field"`` and the index as leading columns."""
    out = frame.copy()
    out.columns = [": ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns]
    return out.reset_index().astype(str)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of a flat frame."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    body = [line(list(frame.columns)), "|" + "---|" * frame.shape[1]]
    return "\n".join(body + [line(list(row)) for row in frame.itertuples(index=False)])


def table_markdown(table: Table) -> str:
    return f"## {table.title}\n\n{table.notes}\n\n{markdown(flat(table.frame))}\n"


def write_table(table: Table, out: Path) -> list[Path]:
    """Write ``NAME.md``, ``NAME.csv`` and ``NAME.tex`` (booktabs) into ``out``."""
    md, csv, tex = (out / f"{table.name}.{ext}" for ext in ("md", "csv", "tex"))
    md.write_text(table_markdown(table), encoding="utf-8")
    flat(table.frame).to_csv(csv, index=False)
    latex = table.frame.to_latex(
        escape=True, multirow=False, multicolumn_format="c", caption=table.title, label=f"tab:{table.name}"
    )
    tex.write_text(latex.replace("±", r"$\pm$").replace(DASH, "--"), encoding="utf-8")
    return [md, csv, tex]


def provenance(cells: pd.DataFrame, experiment: str, tracking_uri: str | None = None) -> list[str]:
    """How the runs were obtained, read from their params and tags (and the sweep run's machine
    tag): one item per line (markdown inline)."""

    def counts(column: str, missing_label: str = "not logged") -> str:
        values = [f"{k} (n={v})" for k, v in cells[column].value_counts().sort_index().items()]
        missing = int(cells[column].isna().sum())
        return ", ".join(values + ([f"{missing_label} (n={missing})"] if missing else [])) or DASH

    started = cells["start_time"]
    return [
        f"MLflow experiment `{experiment}`: {len(cells)} FINISHED runs tagged `raydistill.role = cell`"
        + (f", started {started.min():%Y-%m-%d %H:%M} to {started.max():%Y-%m-%d %H:%M} UTC" if len(started) else ""),
        f"device (tag `device`): {counts('tags.device')}",
        f"k-means backend (tag `kmeans_backend`, none = no K-means): {counts('tags.kmeans_backend')}",
        f"k-means backend asked for (param `backend`): {counts('backend')}",
        f"training images (param `train_limit`): {counts('train_limit', 'the whole training split')}",
        f"seeds (param `seed`): {counts('seed')}",
        f"student epochs (param `student_epochs`): {counts('student_epochs')}",
        f"teacher epochs (param `teacher_epochs`): {counts('teacher_epochs')}",
        f"protocol (param `protocol`): {counts('protocol')}",
        f"git commit (tag `git_commit`): {counts('tags.git_commit')}",
        f"time: the cells' own {cells['time_total_s'].sum() / 3600:.1f} h (teachers, shared, not counted)"
        if len(cells) else "time: no finished cell",
        f"machine (the sweep run's tag `{MACHINE}`): {sweep_machine(experiment, tracking_uri)}",
        f"command: `{COMMANDS.get(experiment, 'the sweep of this name')}` (the same command continues it)",
        "paper values: `analysis/paper_numbers.csv` (each row cites the paper's table, row and column)",
    ]


def sweep_machine(experiment: str, tracking_uri: str | None) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`raydistill.role` = 'sweep'") if found else []
    return runs[0].data.tags.get(MACHINE, "not logged") if runs else "not logged"


def forensics_table(cells: pd.DataFrame, forensic: pd.DataFrame) -> Table:
    """The verdict (analysis/verdict.py) as a Table: every row but the honest one is a hypothesis."""
    both = pd.concat([cells, forensic], ignore_index=True)
    frame = verdict.verdict_table(both).map(verdict._text).set_index("hypothesis")
    return Table("forensics_verdict", verdict.TITLE, verdict.plain_words(verdict.verdict_table(both), both), frame)


def runs_table(runs: pd.DataFrame, paper: PaperNumbers, hypotheses: bool = False) -> Table:
    """Every finished run on its own line (analysis/run_list.py): honest runs, or hypotheses."""
    frame = run_list.run_list(runs, paper, hypotheses)
    frame = frame.set_index(list(frame.columns[:3 if hypotheses else 2]))
    what = "Every finished run, seed by seed"
    notes = ("One row per FINISHED cell run; paper = the paper's printed accuracy for that cell (Tables 1-3), "
             "diff = ours − paper in percentage points; wall = the cell's own time (its teacher is shared and not "
             "counted); training images: all = the whole training split.")
    if hypotheses:
        return Table("forensics_runs", f"Forensics runs (hypotheses, not results): {what.lower()}",
                     notes + " Each run evaluates a hypothesis about the paper's protocol; none is a result.", frame)
    return Table("runs", f"{what} (honest protocol)", notes, frame)


def control_tables(cells: pd.DataFrame) -> list[Table]:
    """The positive controls (analysis/controls.py), when the field's protocol ran at its reference
    settings: ours beside the published baselines, and the paper's sets against random real images."""
    if controls.reference_runs(cells).empty:
        return []
    frame, line = controls.comparison(cells, controls.load_published())
    rule = (f"reproduced = |ours − published| <= {controls.STD_FACTOR:g} x the larger std or <= {controls.BAND_PP} pp; "
            "ours = mean ± sample std over every evaluation model (sets x inits), n = models; protocol dc as the DC "
            "reference code (ConvNet-3, SGD, Epoch+1 passes, lr x0.1 halfway with a fresh optimiser, MNIST "
            "augmented, 1000 epochs on MNIST and 300 on Fashion-MNIST); selection from the full training split; "
            f"seeds fixed before running: the cell's seed s for its first set, SeedSequence([{SET_SEED_OFFSET}, s, i]) "
            f"for set i > 0, SeedSequence([{STUDENT_SEED_OFFSET}, set seed, j]) for model j of a set; "
            f"wall = the cell's own time on one CPU thread; command: `{COMMANDS['controls']}`. "
            "Published numbers and what was checked of them: `analysis/published.csv`.")
    ior = controls.improvements(cells)
    return [Table("controls", f"Positive controls: {line}", rule, frame.set_index(["dataset", "ipc", "method"])),
            Table("controls_ior", "The paper's sets on the field's protocol: improvement over random real images",
                  "IOR = acc(set) − acc(random real) in percentage points (DD-Ranking's improvement over random) ± its "
                  "standard error sqrt(s1²/n1 + s2²/n2) (a lower bound: the models of one set share it); spread = the two "
                  "models' stds in quadrature, how far one model of each can differ; the shifted K-means uses the paper's teacher (LeNet-5, full training split, "
                  "200 epochs); every set is evaluated by ConvNet-3 under protocol dc.", ior.set_index(["dataset", "ipc"]))]


def audit_table() -> Table:
    """The audit's flagged findings (analysis/audit.py): each names the paper's table, row and column."""
    findings = audit.frame(audit.audit())
    shown = findings[audit.flagged(findings)].set_index(["rule", "table", "row", "column"])
    return Table("audit_flagged", "Audit of the paper's printed numbers: the flagged findings",
                 audit.summary_markdown() + "\n\nEvery finding, flagged or not: `audit.md`.", shown)


def write_report(
    cells: pd.DataFrame,
    paper: PaperNumbers,
    out: Path,
    experiment: str,
    binary_dataset: str = "ocid",
    tracking_uri: str | None = None,
    forensic: pd.DataFrame | None = None,
) -> list[Path]:
    """Write every table, the plots, the audit of the paper's numbers, ``all_tables.md`` and
    ``report.html`` into ``out``; return the written paths. `forensic` runs (hypotheses) only
    feed the forensics verdict, never the honest tables."""
    out.mkdir(parents=True, exist_ok=True)
    tables = control_tables(cells) + build_tables(cells, paper, binary_dataset) + [runs_table(cells, paper)]
    if forensic is not None and not forensic.empty:
        tables.append(runs_table(forensic, paper, hypotheses=True))
    paths = [path for table in tables for path in write_table(table, out)]
    if forensic is not None and not forensic.empty:
        paths += verdict.write_verdict(pd.concat([cells, forensic], ignore_index=True), out)
        tables.append(forensics_table(cells, forensic))
    paths += audit.write_audit(out)
    tables.append(audit_table())
    figures = plots.accuracy_plots(cells, paper, out) + plots.galleries(cells, out, tracking_uri)
    how = provenance(cells, experiment, tracking_uri)
    sections = [
        "# The paper's tables regenerated from MLflow\n",
        "## How the runs were obtained\n\n" + "\n".join(f"- {line}" for line in how) + "\n",
        *(table_markdown(table) for table in tables),
        "## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n",
    ]
    markdown_report = out / "all_tables.md"
    markdown_report.write_text("\n".join(sections), encoding="utf-8")
    title = f"The paper's tables regenerated from MLflow: experiment {experiment}"
    html_report = report.write_html(out / "report.html", title, how, tables, figures)
    return paths + figures + [markdown_report, html_report]


def check_store(uri: str) -> None:
    """Fail fast, creating nothing: MLflow would silently create an empty store at a typo'd sqlite
    path or file-store folder, and retry an unreachable server for minutes."""
    parsed = urllib.parse.urlparse(uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise FileNotFoundError(f"no MLflow store at {path}: the file does not exist (run a sweep first, or "
                                    "pass the sweep's --results or --tracking-uri)")
    elif parsed.scheme in ("http", "https"):
        check_reachable(uri, timeout=5.0)
    elif parsed.scheme in ("", "file") and not Path(parsed.path).is_dir():
        raise FileNotFoundError(f"no MLflow store at {parsed.path}: the folder does not exist")


def check_out(out: Path) -> None:
    """Refuse an --out that cannot become a writable folder before reading any run."""
    nearest = next(path for path in (out, *out.absolute().parents) if path.exists())
    if not nearest.is_dir():
        raise NotADirectoryError(f"--out {out}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK):
        raise PermissionError(f"--out {out}: {nearest} is not writable")


def write_for_sweep(experiment: str, results: Path, tracking_uri: str | None = None) -> Path:
    """A sweep's tables, plots and report into RESULTS/tables/EXPERIMENT (default store: the sweep's own)."""
    out = results / "tables" / experiment
    uri = tracking_uri or local_store(results)
    write_report(load_cells(experiment, uri), load_paper(), out, experiment, tracking_uri=uri,
                 forensic=load_cells(experiment, uri, forensics=True))
    return out


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    cli.add_argument("--experiment", default="smoke", help="MLflow experiment = sweep name (default: smoke)")
    cli.add_argument("--results", type=Path, default=Path("results"),
                     help="the sweep's results folder, home of its default store mlflow.db (default: results)")
    cli.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///RESULTS/mlflow.db)")
    cli.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS/tables/EXPERIMENT)")
    cli.add_argument("--binary-dataset", default="ocid", help="dataset_label of the Table 5 (OCID) runs")
    return cli


def _fail(cli: argparse.ArgumentParser, message: str) -> int:
    print(f"{cli.prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Write the tables; print the written paths. Exit code 0, or 2 with one line on stderr."""
    cli = parser(prog)
    try:
        args = cli.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse has already printed
        return int(stop.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uri = args.tracking_uri or local_store(args.results)
    out = args.out or args.results / "tables" / args.experiment
    try:
        check_out(out)
        check_store(uri)
        paths = write_report(load_cells(args.experiment, uri), load_paper(), out, args.experiment,
                             args.binary_dataset, uri, forensic=load_cells(args.experiment, uri, forensics=True))
    except SQLAlchemyError as err:  # e.g. a file that is not an MLflow database
        return _fail(cli, f"cannot read the MLflow store {uri}: {getattr(err, 'orig', None) or err}")
    except (ValueError, OSError, MlflowException) as err:
        return _fail(cli, str(err))
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
