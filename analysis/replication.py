"""The replication report: the paper's claims beside our measurements with their uncertainty, the
positive controls, the audit, the forensics verdict (hypotheses) and the provenance, as
``REPORT.md`` and one self-contained ``report.html``, every number read from MLflow.

    raydistill report [--results results] [--tracking-uri URI] [--out results/report] [--readme README.md]

The paper-settings experiment (issues 15, 21) gives the claims' measurements and the forensics
runs; the controls experiment (issue 23) the positive controls. An experiment that is missing, or
still running, gives what has finished; the report says what is not measured and why. With
``--readme`` the README's summary (between its ``summary`` markers) is replaced by the report's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from analysis import audit, claims, controls, plots, report, verdict
from analysis.paper import load_paper
from analysis.runs import COMMANDS as RUN_COMMANDS
from analysis.runs import load_cells
from analysis.tables import Table, control_tables, flat, markdown, run_list
from raydistill import tracking
from raydistill.archive import FILE, RESTORED, model_checkpoints
from raydistill.config import TrialConfig
from raydistill.protocols import StudentCheckpoint
from raydistill.tracking import MACHINE
from raydistill.tune.grid import TeacherJob, expand, teacher_jobs

PAPER = ('"Image Distillation with the Machine-Learned Gradient of the Loss Function and the K-Means Method" '
         "(Mathematics, 2025)")
EXPERIMENTS = {"paper-settings": "the paper's settings (issues 15, 21)", "controls": "positive controls (issue 23)"}
COMMANDS = {**RUN_COMMANDS, "report": "raydistill report --readme README.md"}
SUMMARY_START, SUMMARY_END = "<!-- summary:start -->", "<!-- summary:end -->"


@dataclass
class Section:
    """A heading, markdown paragraphs, tables and figures, in that order."""

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def load(uri: str, experiment: str, forensics: bool = False) -> pd.DataFrame:
    """An experiment's finished cell runs (honest or hypotheses); an empty frame when it does not exist."""
    if MlflowClient(uri).get_experiment_by_name(experiment) is None:
        return pd.DataFrame()
    return load_cells(experiment, uri, forensics=forensics)


def shown(frame: pd.DataFrame, index: list[str]) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns if c.startswith("_")]).set_index(index)


def claims_section(rows: pd.DataFrame, headline: pd.DataFrame) -> list[Section]:
    legend = " ".join(f"ours = mean ± sample std over seeds (n runs); 95 % interval: "
                      f"{claims.__doc__.split('95 % interval: ')[1]}".split())
    tables = [Table(f"claims_table{t}", f"Table {t}", legend,
                    shown(group.drop(columns="table"), ["dataset", "model", "set", "epochs"]))
              for t, group in rows.groupby("table")]
    return [
        Section("The abstract's headline claims",
                "Each headline number is a cell of Table 4 (ipc 50, 1000 epochs) or Table 5 (OCID); the nearest cell "
                "we measured is the same dataset and ipc at the most epochs we ran.",
                [Table("headline", "Headline claims", "", headline.set_index("claim"))]),
        Section("Tables 1-5, cell by cell",
                "Every printed claim of the paper's Tables 1-5 (Table 4: the paper's own method), with ours where "
                "measured. Training images: LeNet-5 on the full training split; the Baseline on a stratified "
                "10,000 (seeded) where the paper used all 60,000 (column 'training images (ours)').", tables),
    ]


def controls_section(cells: pd.DataFrame) -> Section:
    if cells.empty or controls.reference_runs(cells).empty:
        return Section("Positive controls", "No positive-control run has finished yet "
                       f"(`{COMMANDS['controls']}`).")
    return Section("Positive controls",
                   "The same data loading, selection and evaluation code, under the field's protocol (the DC "
                   "reference code), against numbers the field has reproduced many times; then the paper's sets on "
                   "that protocol against random real images.", control_tables(cells))


def audit_section() -> Section:
    findings = audit.frame(audit.audit())
    by_check = findings.assign(flagged=audit.flagged(findings)).groupby("check").agg(
        findings=("rule", "size"), flagged=("flagged", "sum")).reset_index()
    return Section("The audit of the printed numbers", audit.summary_markdown(),
                   [Table("audit_checks", "Findings by check", "mlscorecheck.*: Kovacs & Fazekas's checks; "
                          "raydistill.*: the project's own rules. Every finding: `docs/audit.md`.",
                          by_check.set_index("check"))])


def forensics_section(honest: pd.DataFrame, forensic: pd.DataFrame) -> Section:
    if forensic.empty:
        return Section("Forensics (hypotheses, not results)", "No forensics run has finished yet.")
    both = pd.concat([honest, forensic], ignore_index=True)
    table = verdict.verdict_table(both)
    return Section(verdict.TITLE, verdict.plain_words(table, both),
                   [Table("forensics_verdict", "Verdict per hypothesis (every row but the first is a hypothesis)",
                          "Rules: `analysis/verdict.py` (fixed before any run).",
                          table.map(verdict._text).set_index("hypothesis"))])


def kept_so_far(ckpt: StudentCheckpoint, cfg: TrialConfig) -> str:
    """What an interrupted dc cell's model-by-model checkpoint holds, e.g. "3 of 10 evaluation
    models; model 4 at pass 420 of 1001 (12.0 s a pass here, about 18.6 h left)": the pace is that
    model's own so far, the hours are the passes left in it and in the models after it."""
    models, passes = cfg.eval_sets * cfg.eval_runs, cfg.student_epochs + 1
    text = f"{ckpt.epoch} of {models} evaluation models"
    partial = ckpt.scorer_state.get("partial")
    if partial is None:
        return text
    pace = (ckpt.seconds - partial["done_seconds"]) / partial["passes"]
    left = passes - partial["passes"] + (models - ckpt.epoch - 1) * passes
    return (f"{text}; model {ckpt.epoch + 1} at pass {partial['passes']} of {passes} "
            f"({pace:.1f} s a pass here, about {left * pace / 3600:.1f} h left)")


def seconds_per_epoch(client: MlflowClient, run_id: str) -> float | None:
    """A teacher run's wall seconds per training epoch: the median gap between consecutive epochs'
    logged losses (a restart or a checkpoint upload does not skew it)."""
    history = sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.timestamp)
    gaps = [(b.timestamp - a.timestamp) / 1000 for a, b in zip(history, history[1:]) if b.step == a.step + 1]
    return float(pd.Series(gaps).median()) if gaps else None


def teachers_left(runs: list, others: list, jobs: dict[str, TeacherJob], pace: dict[str, float | None]) -> pd.DataFrame:
    """Per teacher the unfinished cells wait for (`runs`: its experiment's teacher runs, oldest
    first): the epoch its newest run reached, the epochs still to train to the milestones they
    need, and the hours that takes at the seconds per epoch measured here (`pace` by run id: its own run's, else the
    median of the same dataset and model's teachers in any experiment, `others`)."""
    newest = tracking.by_teacher(runs)
    rows = []
    for key, job in jobs.items():
        run, done = newest.get(key, (None, set()))
        todo = [m for m in job.milestones if m not in done]
        if not todo:
            continue
        reached = int(run.data.tags.get(tracking.CHECKPOINT_EPOCH, 0)) if run else 0
        start = reached if tracking.continues_from(reached, todo) else 0
        cfg = job.config
        alike = [pace[r.info.run_id] for r in others if pace[r.info.run_id] and r.data.params.get("dataset") == cfg.dataset
                 and r.data.params.get("model") == cfg.model and r.data.params.get("train_limit") == str(cfg.train_limit)]
        own = pace[run.info.run_id] if run else None
        seconds = own or (float(pd.Series(alike).median()) if alike else None)
        rows.append({"teacher": job.name, "dataset": cfg.dataset, "model": cfg.model, "seed": cfg.seed,
                     "training images": "all" if cfg.train_limit is None else f"{cfg.train_limit:,}",
                     "epoch reached": start, "epochs needed": max(todo), "epochs left": max(todo) - start,
                     "s per epoch here": "–" if seconds is None else f"{seconds:.0f}" + (
                         "" if own else f" (median of {len(alike)} alike)"),
                     "hours left": "–" if seconds is None else f"{(max(todo) - start) * seconds / 3600:.1f}"})
    return pd.DataFrame(rows)


def coverage(uri: str, names: dict[str, str]) -> Section:
    """What the grids hold that has not finished, each cell with why and the teacher it waits for,
    the evaluation models an interrupted dc cell has kept (the same command continues from them),
    what each waited-for teacher still costs here, and the command."""
    from argparse import Namespace

    from sweeps import controls as controls_grid
    from sweeps import forensics

    grids = {"paper-settings": (forensics.paper_settings(own_teachers=False), None),
             "controls": (controls_grid.grid(Namespace(smoke=False, mnist_50=True)),
                          controls_grid.grid(Namespace(smoke=False, mnist_50=False)))}
    client, lines, rows, teachers = MlflowClient(uri), [], [], []
    experiments = {role: client.get_experiment_by_name(names[role]) for role in grids}
    teacher_runs = {role: [] if e is None else tracking.search(uri, e.experiment_id, "teacher")
                    for role, e in experiments.items()}
    every_teacher = [r for found in teacher_runs.values() for r in found]
    pace = {r.info.run_id: seconds_per_epoch(client, r.info.run_id) for r in every_teacher}
    for role, (grid, default) in grids.items():
        experiment = experiments[role]
        finished = set() if experiment is None else {
            r.data.tags.get("raydistill.cell_key") for r in client.search_runs(
                [experiment.experiment_id], "tags.`raydistill.role` = 'cell' and attributes.status = 'FINISHED'",
                max_results=50_000)}
        held = {} if experiment is None else model_checkpoints(uri, experiment.experiment_id)
        cells = expand(grid, {"seed": 0})
        kept = None if default is None else {c.key for c in expand(default, {"seed": 0})}
        first_seed = min(c.config.seed for c in cells)
        left = [c for c in cells if c.key not in finished]
        jobs = teacher_jobs(left)
        for cell in left:
            why = ("left out by the cost rule (`--mnist-50` runs it)" if kept is not None and cell.key not in kept
                   else "hypothesis" if cell.config.is_forensics
                   else "honest, seed " + str(cell.config.seed) + (" (a seed of the error bars)"
                                                                   if cell.config.seed != first_seed else ""))
            rows.append({"experiment": names[role], "cell": cell.name, "why it is listed": why,
                         "waits for": jobs[cell.teacher_key].name if cell.teacher_key else "",
                         "kept so far": kept_so_far(held[cell.key][1], cell.config) if cell.key in held else "",
                         "key": cell.key})
        teachers.append(teachers_left(teacher_runs[role], every_teacher, jobs, pace).assign(experiment=names[role]))
        done = len(cells) - len(left)
        lines.append(f"- `{names[role]}`: {done} of {len(cells)} cells finished; the rest continue with "
                     f"`{COMMANDS[role]}`" + (" (`--mnist-50` for the cells the cost rule leaves out)"
                                               if kept is not None else ""))
    waiting = pd.concat(teachers, ignore_index=True)
    tables = [Table("teachers_left", "Teachers the unfinished cells wait for",
                    "Why they are not run yet: their cost on this project's 2-core CPU. Hours left = epochs left x "
                    "the wall seconds per epoch measured here (a trial beside others, on the machine that ran it); "
                    "– where no teacher of that dataset and model has trained in this store.",
                    waiting.set_index(["experiment", "teacher"]))] if not waiting.empty else []
    tables += [Table("not_finished", "Cells not finished", "", pd.DataFrame(rows).set_index(["experiment", "cell"]))
               ] if rows else []
    return Section("What has not been run", "\n".join(lines), tables)


def provenance(uri: str, frames: dict[str, pd.DataFrame], names: dict[str, str]) -> Section:
    """Commands, commits, seeds, hardware and time of each experiment, from its runs and tags."""
    client, lines = MlflowClient(uri), []
    for role, cells in frames.items():
        name = names[role]
        if cells.empty:
            lines.append(f"- `{name}` ({EXPERIMENTS[role]}): no finished run yet; `{COMMANDS[role]}`")
            continue
        experiment = client.get_experiment_by_name(name)
        sweep = client.search_runs([experiment.experiment_id], "tags.`raydistill.role` = 'sweep'")
        machine = sweep[0].data.tags.get(MACHINE, "not logged") if sweep else "not logged"
        ends = pd.to_datetime([r.info.end_time for r in client.search_runs(
            [experiment.experiment_id], "tags.`raydistill.role` = 'cell'") if r.info.end_time], unit="ms", utc=True)
        counts = {column: ", ".join(f"{k} (n={v})" for k, v in cells[column].value_counts().sort_index().items())
                  for column in ("seed", "tags.git_commit", "tags.device")}
        lines += [
            f"- `{name}` ({EXPERIMENTS[role]}): `{COMMANDS[role]}` (the same command continues it)",
            f"  - {len(cells)} finished honest cell runs, started {cells['start_time'].min():%Y-%m-%d %H:%M} to "
            f"{cells['start_time'].max():%Y-%m-%d %H:%M} UTC, the last ended {ends.max():%Y-%m-%d %H:%M} UTC; "
            f"their own time {cells['time_total_s'].sum() / 3600:.1f} h (teachers not counted)"
            + (f"; {restored} of them restored from the sweep's committed export (`{FILE}`), measured on an earlier "
               "store" if (restored := int(cells.get(f"tags.{RESTORED}", pd.Series(dtype=str)).notna().sum())) else ""),
            f"  - seeds: {counts['seed']}; git commits: {counts['tags.git_commit']}",
            f"  - device (tag): {counts['tags.device']}; machine (sweep tag): {machine}",
        ]
    lines.append(f"- this report: `{COMMANDS['report']}`, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
                 f"at commit {head_commit()} from {uri.split(':', 1)[0]} store; every number is read from MLflow "
                 "(the paper's printed numbers from `analysis/paper_numbers.csv`, the published baselines from "
                 "`analysis/published.csv`)")
    return Section("Provenance", "\n".join(lines))


def head_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def verdict_line(table: pd.DataFrame) -> str:
    """The forensics verdict in one sentence: whether any hypothesis reproduces, and the closest."""
    mae = "MAE vs paper (pp)"
    hypotheses = table[(table["hypothesis"] != verdict.HONEST_LABEL) & table[mae].notna()].sort_values(mae)
    if hypotheses.empty:
        return "no hypothesis has a measured cell that the paper prints yet."
    best, reproducing = hypotheses.iloc[0], hypotheses[hypotheses["reproduces"]]
    head = ("these reproduce the paper by the rule fixed before the runs: "
            + ", ".join(f"`{h}`" for h in reproducing["hypothesis"]) if len(reproducing)
            else "no reading of the protocol reproduces the paper by the rule fixed before the runs")
    return (f"{head}; the closest, `{best['hypothesis']}`, is {best[mae]:.2f} pp off on average over "
            f"{best['cells with a paper value']} printed cells (section 6).")


def appendix(frames: dict[str, pd.DataFrame], forensic: pd.DataFrame, paper) -> list[Table]:
    """Every finished run with its cell key (provenance, cell by cell); the hypotheses' apart."""
    out = []
    for name, cells in frames.items():
        if not cells.empty:
            runs = run_list.run_list(cells, paper, keys=True)
            out.append(Table(f"runs_{name}", f"Every finished run of `{name}`", "",
                             runs.set_index(list(runs.columns[:2]))))
    if not forensic.empty:
        runs = run_list.run_list(forensic, paper, hypotheses=True, keys=True)
        out.append(Table("runs_hypotheses", "Every finished forensics run (hypotheses, not results)", "",
                         runs.set_index(list(runs.columns[:3]))))
    return out


def summary(rows: pd.DataFrame, control: str | None, verdict_words: str, audit_line: str) -> tuple[pd.DataFrame, str]:
    """The answer in short: every claim we measured over several seeds (a table), then one line
    each for all the claims, the controls, the audit and the forensics."""
    seeded = rows[rows["n"] >= 2]
    table = shown(seeded, ["dataset", "model", "set", "epochs"])[["paper (%)", "ours (%)", "n", "95 % interval",
                                                                  "verdict"]]
    measured = rows[rows["_mean"].notna()]
    inside = int(measured["verdict"].str.startswith("inside").sum())
    lines = [f"- Positive controls: {control or 'none finished yet'} (section 4)."]
    lines += [f"- Every printed claim of Tables 1-5: {len(rows)}; measured here: {len(measured)}; the paper's value "
              f"inside our 95 % interval: {inside} of {len(measured)} (section 3).",
              *([gap_line(measured)] if len(measured) else []),
              f"- Audit: {audit_line}", f"- Forensics (hypotheses, not results): {verdict_words}"]
    return table, "\n".join(lines)


def gap_line(measured: pd.DataFrame) -> str:
    """How far the measured claims are from ours, in one line."""
    gaps = measured["_mean"] - pd.to_numeric(measured["paper (%)"])
    seeded = int((measured["n"] >= 2).sum())
    return (f"- The measured claims' gaps, ours − paper: {gaps.min():+.2f} to {gaps.max():+.2f} pp (median "
            f"{gaps.median():+.2f}); {seeded} of the {len(measured)} over several seeds, the others one run each.")


BY_ROW = ("Every measured claim, a line per row of the paper's tables (ours = each cell's mean over its n seeds; "
          "spread = the largest sample std over seeds among the row's cells; interval: section 3 of the report)")


def summary_markdown(table: pd.DataFrame, lines: str, rows: pd.DataFrame) -> str:
    """The summary as the README carries it: the controls first, then the claims measured over
    several seeds, every measured claim by row of the paper's tables, then the rest."""
    first, rest = lines.split("\n", 1)
    head = ("The claims measured over several seeds (ours = mean ± std, n seeds; 95 % interval: where one run would "
            "fall, over the seeds):\n\n"
            + markdown(flat(table))) if len(table) else "No claim has been measured over several seeds yet."
    by_row = f"{BY_ROW}:\n\n{markdown(rows.astype(str))}" if len(rows) else "No claim has been measured yet."
    return f"{first}\n\n{head}\n\n{by_row}\n\n{rest}"


def write(uri: str, out: Path, readme: Path | None = None, names: dict[str, str] | None = None) -> list[Path]:
    """Write the report from the experiments `names` ("paper-settings" and "controls" -> their
    MLflow experiment names; by default the same)."""
    names = {**{name: name for name in EXPERIMENTS}, **(names or {})}
    paper = load_paper()
    frames = {role: load(uri, names[role]) for role in EXPERIMENTS}
    honest, forensic = frames["paper-settings"], load(uri, names["paper-settings"], forensics=True)
    out.mkdir(parents=True, exist_ok=True)
    rows = claims.claim_rows(honest, paper)
    headline = claims.headline_rows(rows, pd.read_csv(audit.DATA / audit.PAPER_TEXT, dtype=str, keep_default_na=False))
    figures = (plots.accuracy_plots(honest, paper, out) + plots.galleries(honest, out, uri)) if not honest.empty else []
    findings = audit.frame(audit.audit())
    audit_line = (f"{int(audit.flagged(findings).sum())} of {len(findings)} findings about the paper's printed numbers "
                  "are flagged (section 5).")
    control_line = controls.comparison(frames["controls"], controls.load_published())[1] if not (
        frames["controls"].empty or controls.reference_runs(frames["controls"]).empty) else None
    words = verdict_line(verdict.verdict_table(pd.concat([honest, forensic]))) if not forensic.empty else (
        "none finished yet.")
    seeded, lines = summary(rows, control_line, words, audit_line)
    by_row = claims.by_row(rows)
    sections = [
        Section("The answer", lines, [
            *([Table("seeded", "The claims measured over several seeds", "ours = mean ± sample std over seeds (n); "
                     "95 % interval: where one run would fall (prediction interval, Student's t over the seeds).",
                     seeded)] if len(seeded) else []),
            *([Table("by_row", "Every measured claim by row of the paper's tables", f"{BY_ROW}.",
                     by_row.set_index(["table", "dataset", "model", "set"]))] if len(by_row) else []),
            Table("tally", "Claims per table", "", claims.tally(rows).set_index("table"))]),
        *claims_section(rows, headline),
        controls_section(frames["controls"]),
        audit_section(),
        forensics_section(honest, forensic),
        Section("Figures", "Ours (mean ± std over seeds) beside the paper's printed values (dashed, 'claimed'); "
                "galleries of distilled sets.", figures=figures),
        provenance(uri, frames, names),
        coverage(uri, names),
        Section("Appendix: every finished run and its cell key", "", appendix(frames, forensic, paper)),
    ]
    title = f"Replication report: {PAPER}"
    md, html = out / "REPORT.md", out / "report.html"
    md.write_text(render_markdown(title, sections, out), encoding="utf-8")
    html.write_text(report.render_sections(title, [(s.title, s.text, s.tables, s.figures) for s in sections]),
                    encoding="utf-8")
    short = summary_markdown(seeded, lines, by_row)
    (out / "summary.md").write_text(short + "\n", encoding="utf-8")
    if readme is not None:
        replace_summary(readme, short)
    return [md, html, out / "summary.md", *figures]


def render_markdown(title: str, sections: list[Section], out: Path) -> str:
    parts = [f"# {title}\n"]
    for number, section in enumerate(sections, 1):
        parts.append(f"## {number}. {section.title}\n")
        if section.text:
            parts.append(section.text + "\n")
        for table in section.tables:
            parts.append(f"### {table.title}\n\n" + (f"{table.notes}\n\n" if table.notes else "")
                         + markdown(flat(table.frame)) + "\n")
        parts += [f"![{p.stem}]({p.relative_to(out).as_posix()})\n" for p in section.figures]
    return "\n".join(parts)


def replace_summary(readme: Path, summary: str) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(SUMMARY_START), text.find(SUMMARY_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {SUMMARY_START} ... {SUMMARY_END} markers")
    readme.write_text(text[:start + len(SUMMARY_START)] + "\n" + summary + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    from analysis.tables import check_store
    from raydistill.tracking import local_store

    cli = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    cli.add_argument("--results", type=Path, default=Path("results"), help="the sweeps' results folder (its mlflow.db)")
    cli.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: sqlite:///RESULTS/mlflow.db)")
    cli.add_argument("--out", type=Path, default=None, help="output folder (default: RESULTS/report)")
    cli.add_argument("--readme", type=Path, default=None, help="also replace this README's summary")
    cli.add_argument("--paper-experiment", default="paper-settings", help="the experiment of the paper's settings")
    cli.add_argument("--controls-experiment", default="controls", help="the experiment of the positive controls")
    args = cli.parse_args(argv)
    uri = args.tracking_uri or local_store(args.results)
    try:
        check_store(uri)
        names = {"paper-settings": args.paper_experiment, "controls": args.controls_experiment}
        paths = write(uri, args.out or args.results / "report", args.readme, names)
    except (ValueError, OSError) as err:
        print(f"{cli.prog}: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
