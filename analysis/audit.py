"""Audit the paper's printed numbers for internal consistency, without training anything.

    python analysis/audit.py --out DIR

Reads only ``paper_numbers.csv`` (the transcribed tables) and ``ceilings.csv`` (published full-data
accuracies, each with its source) and writes ``audit.md`` and ``audit.csv``: one row per finding,
each naming the table, row and column of the printed cell(s) it comes from.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields

import pandas as pd

from analysis.paper import PaperNumbers, load_paper

CEILINGS_PATH = Path(__file__).with_name("ceilings.csv")
OCID_TEST_IMAGES = 126  # Section 4.1: "The entire set is split to 4946 training, 120 validation, and 126 test images"
SIZE_LIMIT = 10_000  # every two-decimal percentage is k/10000, so some size up to this always fits

BETWEEN = "accuracy between sensitivity and specificity"
SIZES = "test-set class sizes from two-decimal rounding"
ABOVE_FULL = "distilled above full data"
CEILING = "above a published ceiling"
TEXT = "text against tables"
RULES = (BETWEEN, SIZES, ABOVE_FULL, CEILING, TEXT)
OK, NA = "ok", "n/a"

Where = tuple[str, str, str]  # (table, row, column) in the paper's own labels


@dataclass(frozen=True)
class Finding:
    """One verdict on printed cell(s), named by the paper's table, row and column."""

    rule: str
    table: str
    row: str
    column: str
    printed: str
    verdict: str
    explanation: str


def finding(rule: str, where: Where, printed: str, verdict: str, explanation: str) -> Finding:
    return Finding(rule, *where, printed, verdict, explanation)


@dataclass(frozen=True)
class Claim:
    """A statement of the paper's text (verbatim), where it is, and the printed cells it is about.

    ``cells`` select rows of ``paper_numbers.csv`` (``PaperNumbers.rows`` keywords). ``kind``:
    ``value``/``min``/``max`` compare ``value`` (as the text prints it, ``decimals`` places) with
    the cell, the smallest or the largest of the cells; ``difference`` with first minus second;
    ``rising`` looks for a drop along every series of epochs; ``narrowing`` asks that Table 3's gap
    (full minus distilled) shrink with epochs; ``fewer-epochs`` compares Table 4's N2 columns.
    """

    quote: str
    where: str
    kind: str
    cells: tuple[dict, ...]
    value: float | None = None
    decimals: int = 2


def _t1(dataset: str, model: str) -> dict:
    return {"table": 1, "dataset": dataset, "model": model, "epochs": 600}


def _t3(dataset: str, method: str) -> dict:
    return {"table": 3, "dataset": dataset, "method": method, "epochs": 200}


def _t4(dataset: str, method: str, ipc: int) -> dict:
    return {"table": 4, "dataset": dataset, "method": method, "ipc": ipc}


T5_FULL, T5_DISTILLED = ({"table": 5, "method": m, "metric": "accuracy"} for m in ("full", "kmeans"))
FIG4 = "Section 5, Figure 4 caption (ResNet trained with the 20 distilled images for 600 epochs)"
CONCL = "Section 7 (Conclusions)"
INTRO = "Section 1 (Introduction)"
Q_ABSTRACT = (
    "we obtained accuracies of 99.93% for MNIST, 99.46% for Fashion-MNIST, 99.05% for CIFAR-10, and 91.8% for OCID"
)
Q_OCID = (
    "For the ResNet model, the entire original OCID dataset achieved accuracies between 91.29% and 91.54% across "
    "200–600 epochs, whereas training with distilled images yielded accuracies ranging from 72.50% to 91.80%."
)
Q_FIG4 = (
    "The normalized confusion matrix shows high diagonal values (light-green) of 0.52 (true normal predicted as "
    "normal) and (yellow) 0.65 (true cancer predicted as cancer)"
)
Q_600 = "The Baseline model achieved 99.67% on MNIST, while LeNet had the highest accuracy of 99.73%."
Q_FASHION = "For Fahiom-MNIST, Baseline achieved the highest accuracy with 99.52%, while LeNet attained 98.75%."
Q_T3 = (
    "gave 97.51% on MNIST and 96.80% on Fashion-MNIST, which are close enough to the full-data performance of "
    "99.36% and 98.49%, respectively"
)
Q_INTRO_T3 = (
    "training the Baseline CNN with 100 images distilled from MNIST provided an accuracy of 97.51%, while training "
    "with 60,000 original training images showed 99.36%"
)
Q_GAPS = (
    "In the case of MNIST, training with the 100 distilled images gives 1.85% lower accuracy. For Fashion the "
    "difference is 1.69%, while for Cifar-10 when trained with 100 distilled images, the classification is 5.39%"
)
CLAIMS = (
    Claim(
        "our method distills images, which: steady increase classification accuracy when the distillation training "
        "epochs increase (Table 1 and Table 2)",
        f"{INTRO}; restated in Section 5",
        "rising",
        ({"table": 1}, {"table": 2}),
    ),
    Claim(
        "The gradual improvement with increasing the training epochs and the convergence toward full-dataset "
        "performance indicate that the distilled subset retains essential distinctive features even for complex "
        "medical imagery.",
        "Section 5",
        "rising",
        (T5_DISTILLED,),
    ),
    Claim(
        "One can tell that the gap between the classification accuracies if trained with original and distilled "
        "images narrowed significantly with the increase in the training epochs for distillation.",
        "Section 5",
        "narrowing",
        ({"table": 3},),
    ),
    Claim(
        "Our method outperformed both while requiring fewer epochs for training and distillation",
        f'{CONCL}; the Abstract: "showed the supremacy of the former even if trained with fewer epochs"',
        "fewer-epochs",
        ({"table": 4},),
    ),
    Claim(Q_ABSTRACT, "Abstract", "value", (_t4("mnist", "kmeans", 50),), 99.93),
    Claim(Q_ABSTRACT, "Abstract", "value", (_t4("fashion-mnist", "kmeans", 50),), 99.46),
    Claim(Q_ABSTRACT, "Abstract", "value", (_t4("cifar10", "kmeans", 50),), 99.05),
    Claim(Q_ABSTRACT, "Abstract", "max", (T5_DISTILLED,), 91.8, 1),
    Claim(
        "Notably, the new method achieved 99.20%, significantly outperforming the competitors on CIFAR-10 image "
        "databases.",
        INTRO,
        "value",
        (_t4("cifar10", "kmeans", 10),),
        99.20,
    ),
    Claim(Q_INTRO_T3, INTRO, "value", (_t3("mnist", "kmeans"),), 97.51),
    Claim(Q_INTRO_T3, INTRO, "value", (_t3("mnist", "full"),), 99.36),
    Claim(Q_OCID, "Section 5; repeated in Section 7", "min", (T5_FULL,), 91.29),
    Claim(Q_OCID, "Section 5; repeated in Section 7", "max", (T5_FULL,), 91.54),
    Claim(Q_OCID, "Section 5; repeated in Section 7", "min", (T5_DISTILLED,), 72.50),
    Claim(Q_OCID, "Section 5; repeated in Section 7", "max", (T5_DISTILLED,), 91.80),
    Claim(Q_FIG4, FIG4, "value", ({"table": 5, "method": "kmeans", "epochs": 600, "metric": "specificity"},), 52, 0),
    Claim(Q_FIG4, FIG4, "value", ({"table": 5, "method": "kmeans", "epochs": 600, "metric": "sensitivity"},), 65, 0),
    Claim(Q_600, CONCL, "value", (_t1("mnist", "baseline"),), 99.67),
    Claim(Q_600, CONCL, "value", (_t1("mnist", "lenet"),), 99.73),
    Claim(Q_FASHION, CONCL, "value", (_t1("fashion-mnist", "baseline"),), 99.52),
    Claim(Q_FASHION, CONCL, "value", (_t1("fashion-mnist", "lenet"),), 98.75),
    Claim("Also, the latter CNN reached 98.62% on CIFAR-10.", CONCL, "value", (_t1("cifar10", "lenet"),), 98.62),
    Claim(Q_T3, CONCL, "value", (_t3("fashion-mnist", "kmeans"),), 96.80),
    Claim(Q_T3, CONCL, "value", (_t3("fashion-mnist", "full"),), 98.49),
    Claim(
        "our method reached 99.05%, compared to 68.5% for KIP-Scatternet",
        CONCL,
        "value",
        (_t4("cifar10", "kip-scatternet", 50),),
        68.5,
        1,
    ),
    Claim("73.6% for RTP", CONCL, "value", (_t4("cifar10", "rtp", 50),), 73.6, 1),
    *(
        Claim(Q_GAPS, "Section 6 (Discussion)", "difference", (_t3(name, "full"), _t3(name, "kmeans")), gap)
        for name, gap in (("mnist", 1.85), ("fashion-mnist", 1.69), ("cifar10", 5.39))
    ),
)


# ---- rounding arithmetic: which integer counts print as a two-decimal percentage ----


def counts(printed: float, n: int) -> list[int]:
    """Every ``k`` in ``0..n`` whose ``100 k / n`` rounds to ``printed`` at two decimals.

    Exact integer arithmetic; a tie at half a hundredth is accepted (either rounding rule).
    """
    if n < 1:
        raise ValueError(f"class size must be positive, got {n}")
    hundredths = round(printed * 100)
    guess = hundredths * n // 10_000
    return [k for k in range(max(0, guess - 1), min(n, guess + 2) + 1) if abs(20_000 * k - 2 * hundredths * n) <= n]


def sizes(printed: Iterable[float], limit: int = SIZE_LIMIT) -> list[int]:
    """Every class size ``n <= limit`` for which each printed percentage is some ``k / n``."""
    values = list(printed)
    return [n for n in range(1, limit + 1) if all(counts(v, n) for v in values)]


def smallest_size(printed: Iterable[float], limit: int = SIZE_LIMIT) -> int:
    """The smallest class size consistent with every printed percentage."""
    found = sizes(printed, limit)
    if not found:
        raise ValueError(f"no class size up to {limit} fits the printed values")
    return found[0]


def accuracies(sensitivity: float, specificity: float, n_pos: int, n_neg: int) -> list[int]:
    """Numbers of correct test images that these printed rates allow with these class sizes.

    Where a rate fits no count at its size, its two neighbouring counts stand in for it.
    """

    def ks(rate: float, n: int) -> list[int]:
        below = int(rate * n / 100)
        return counts(rate, n) or [below, min(n, below + 1)]

    return sorted({a + b for a in ks(sensitivity, n_pos) for b in ks(specificity, n_neg)})


def best_splits(sens: list[float], spec: list[float], total: int) -> tuple[int, list[tuple[int, int]]]:
    """How many printed rates the best (n_pos, n_neg) splits of ``total`` fit, and those splits."""
    fits = {
        (p, total - p): sum(bool(counts(v, p)) for v in sens) + sum(bool(counts(v, total - p)) for v in spec)
        for p in range(1, total)
    }
    best = max(fits.values())
    return best, [split for split, fit in fits.items() if fit == best]


# ---- where a printed cell is ----

SOURCE = re.compile(r"^Table (\d+), row (.+?), column (.+?)(?:, cell .+)?$")


def locate(source: str) -> Where:
    """(table, row, column) of a source such as "Table 1, row 10/MNIST/LeNet, column 500"."""
    match = SOURCE.match(source)
    if match is None:
        raise ValueError(f"unrecognised source {source!r}")
    table, row, column = match.groups()
    return f"Table {table}", row, column


def span(rows: pd.DataFrame) -> Where:
    """(table, row, column) naming several cells: their distinct tables, rows and columns in order."""
    parts = [locate(s) for s in rows["source"]]
    return tuple(", ".join(dict.fromkeys(p[i] for p in parts)) for i in range(3))


def fmt(value: float, decimals: int = 2) -> str:
    return f"{value:.{decimals}f}"


def said(claim: Claim) -> str:
    return f'"{claim.quote}" ({claim.where})'


# ---- the rules ----


def _binary_rows(paper: PaperNumbers) -> list[pd.DataFrame]:
    """Table 5's rows (one network, method and epochs each), indexed by metric, in the paper's order."""
    rows = paper.rows(table=5)
    return [group.set_index("metric") for _, group in rows.groupby(["model", "method", "epochs"], sort=False)]


def binary_between(paper: PaperNumbers) -> list[Finding]:
    """Accuracy is the class-size-weighted mean of sensitivity and specificity, so it lies between them."""
    found = []
    for row in _binary_rows(paper):
        acc, sens, spec = (float(row.loc[m, "value"]) for m in ("accuracy", "sensitivity", "specificity"))
        low, high = sorted((sens, spec))
        inside = low - 0.01 <= acc <= high + 0.01  # each of the three may be off by half a hundredth
        why = f"accuracy must lie in [{fmt(low)}, {fmt(high)}]"
        if not inside:
            why += f"; {fmt(acc)} is {fmt(min(abs(acc - low), abs(acc - high)))} pp outside"
        printed = f"accuracy {fmt(acc)}, sensitivity {fmt(sens)}, specificity {fmt(spec)}"
        verdict = OK if inside else "impossible"
        found.append(finding(BETWEEN, locate(row.loc["accuracy", "source"]), printed, verdict, why))
    return found


def class_sizes(paper: PaperNumbers, total: int = OCID_TEST_IMAGES) -> list[Finding]:
    """Class sizes the printed sensitivities and specificities imply, and the accuracies those sizes allow."""
    rates = {m: paper.rows(table=5, metric=m) for m in ("sensitivity", "specificity")}
    everywhere = ("Table 5", "all epochs, both column groups")
    found = []
    for metric, rows in rates.items():
        n = smallest_size(rows["value"])
        found.append(
            finding(
                SIZES,
                (*everywhere, metric.capitalize()),
                ", ".join(fmt(v) for v in rows["value"]),
                OK if n <= total else "inconsistent",
                f"the smallest class size n for which every printed {metric} is some k/n is {n}; "
                f"the paper states {total} test images in all (Section 4.1)",
            )
        )
    sens, spec = (list(rates[m]["value"]) for m in rates)
    best, splits = best_splits(sens, spec, total)
    n_pos, n_neg = splits[0]
    misfits = [
        (row, n)
        for rows, n in ((rates["sensitivity"], n_pos), (rates["specificity"], n_neg))
        for _, row in rows.iterrows()
        if not counts(row["value"], n)
    ]
    why = (
        f"of the splits of the {total} test images into positives and negatives, the best ("
        + " or ".join(f"n_pos = {p}, n_neg = {q}" for p, q in splits)
        + f") fits {best} of {len(sens) + len(spec)} printed rates"
    )
    if misfits:
        why += "; not " + ", ".join(
            f"{fmt(r['value'])} ({r['metric']}, {locate(r['source'])[1]} epochs)" for r, _ in misfits
        )
    verdict = OK if best == len(sens) + len(spec) else "impossible"
    both = (*everywhere, "Sensitivity and Specificity")
    found.append(finding(SIZES, both, f"{len(sens) + len(spec)} rates", verdict, why))
    for row, n in misfits:
        below = int(row["value"] * n / 100)
        found.append(
            finding(
                SIZES,
                locate(row["source"]),
                fmt(row["value"]),
                "inconsistent",
                f"every other {row['metric']} of Table 5 is some k/{n}, this one is not: "
                f"{below}/{n} = {fmt(100 * below / n)}, {below + 1}/{n} = {fmt(100 * (below + 1) / n)}",
            )
        )
    for row in _binary_rows(paper):
        acc, sens_v, spec_v = (float(row.loc[m, "value"]) for m in ("accuracy", "sensitivity", "specificity"))
        allowed, printable = accuracies(sens_v, spec_v, n_pos, n_neg), counts(acc, total)
        why = (
            f"with n_pos = {n_pos}, n_neg = {n_neg}, sensitivity {fmt(sens_v)} and specificity {fmt(spec_v)} allow "
            "accuracy " + " or ".join(f"{k}/{total} = {fmt(100 * k / total)}" for k in allowed)
        )
        if not printable:
            why += f"; no k/{total} prints as {fmt(acc)} at all"
        verdict = OK if set(allowed) & set(printable) else "impossible"
        found.append(finding(SIZES, locate(row.loc["accuracy", "source"]), fmt(acc), verdict, why))
    return found


def distilled_vs_full(paper: PaperNumbers) -> list[Finding]:
    """Distilled accuracy against the full-training-set accuracy of the same network and epochs."""
    cells = paper.rows(metric="accuracy")
    full = cells[cells["method"] == "full"]
    pairs = cells[cells["method"] == "kmeans"].merge(full, on=["dataset", "model", "epochs"], suffixes=("", "_full"))
    found = []
    for _, pair in pairs.iterrows():
        above = pair["value"] > pair["value_full"]
        why = (
            f"{pair['model']}, {pair['epochs']} epochs, ipc {pair['ipc']}; full training set printed at "
            + ", ".join(locate(pair["source_full"]))
            + (f"; distilled is {fmt(pair['value'] - pair['value_full'])} pp higher" if above else "")
        )
        printed = f"{fmt(pair['value'])} vs full {fmt(pair['value_full'])}"
        found.append(finding(ABOVE_FULL, locate(pair["source"]), printed, "above full data" if above else OK, why))
    return found


def load_ceilings(path: Path = CEILINGS_PATH) -> pd.DataFrame:
    """The ceilings CSV; an empty ``model`` means the ceiling holds for every network on that dataset."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"dataset", "model", "value", "what", "source"} - set(frame.columns)
    if missing or (frame["source"].str.strip() == "").any():
        raise ValueError(f"{path.name}: every row needs dataset, model, value, what and a source")
    frame["value"] = frame["value"].astype(float)
    return frame


def above_ceilings(paper: PaperNumbers, ceilings: pd.DataFrame) -> list[Finding]:
    """Every printed accuracy against the published ceilings of its dataset (and of its network, if named)."""
    found = []
    for _, cell in paper.rows(metric="accuracy").iterrows():
        hold = ceilings[(ceilings["dataset"] == cell["dataset"]) & ceilings["model"].isin(["", cell["model"]])]
        if hold.empty:
            continue
        exceeded = hold[hold["value"] < cell["value"]]
        why = "; ".join(
            f"{'above' if c['value'] < cell['value'] else 'not above'} {c['value']:g}: {c['what']} ({c['source']})"
            for _, c in (exceeded if len(exceeded) else hold).iterrows()
        )
        verdict = "above ceiling" if len(exceeded) else OK
        found.append(finding(CEILING, locate(cell["source"]), fmt(cell["value"]), verdict, why))
    return found


def text_claims(paper: PaperNumbers, claims: Iterable[Claim] = CLAIMS) -> list[Finding]:
    """Each claim of the text checked against the printed cells it is about."""
    return [f for claim in claims for f in CHECKS[claim.kind](paper, claim)]


def _quoted(paper: PaperNumbers, claim: Claim) -> list[Finding]:
    rows = [paper.rows(**selector) for selector in claim.cells]
    cells = pd.concat(rows)
    if claim.kind == "difference":
        table_value, where = float(rows[0]["value"].iloc[0] - rows[1]["value"].iloc[0]), span(cells)
    else:
        pick = {"value": 0, "min": cells["value"].argmin(), "max": cells["value"].argmax()}[claim.kind]
        table_value, where = float(cells["value"].iloc[pick]), locate(cells["source"].iloc[pick])
    tolerance = 0.5 * 10**-claim.decimals + 1e-9
    agrees = abs(table_value - claim.value) <= tolerance
    printed = f"text {fmt(claim.value, claim.decimals)}, table {fmt(table_value)}"
    why = printed + ("" if claim.kind == "value" else f" ({claim.kind} of the cells)")
    if not agrees:
        same_table = paper.rows(table=int(where[0].split()[1]))
        match = same_table[(same_table["value"] - claim.value).abs() <= tolerance]
        quoted = fmt(claim.value, claim.decimals)
        why += "".join(f"; {quoted} is printed at {', '.join(locate(s))}" for s in match["source"])
    return [finding(TEXT, where, printed, OK if agrees else "differs", f"{why}; {said(claim)}")]


def _rising(paper: PaperNumbers, claim: Claim) -> list[Finding]:
    found = []
    cells = pd.concat([paper.rows(**selector) for selector in claim.cells])
    for _, series in cells.groupby(["table", "dataset", "model", "method", "ipc", "metric"], sort=False, dropna=False):
        series = series.sort_values("epochs")
        values, epochs = list(series["value"]), list(series["epochs"])
        drops = [i for i in range(1, len(values)) if values[i] < values[i - 1]]
        if drops:
            where = span(series.iloc[sorted({j for i in drops for j in (i - 1, i)})])
            printed = "; ".join(f"{fmt(values[i - 1])} -> {fmt(values[i])}" for i in drops)
            why = "; ".join(f"accuracy falls from {epochs[i - 1]} to {epochs[i]} epochs" for i in drops)
        else:
            where, printed = span(series), " / ".join(fmt(v) for v in values)
            why = f"accuracy never falls over {epochs[0]}-{epochs[-1]} epochs"
        found.append(finding(TEXT, where, printed, "contradicts text" if drops else OK, f"{why}; {said(claim)}"))
    return found


def _narrowing(paper: PaperNumbers, claim: Claim) -> list[Finding]:
    found = []
    cells = pd.concat([paper.rows(**selector) for selector in claim.cells])
    for _, rows in cells.groupby("dataset", sort=False):
        gaps = rows.pivot_table(index="epochs", columns="method", values="value").sort_index()
        gaps = list((gaps["full"] - gaps["kmeans"]).items())
        widens = [(a, b) for a, b in zip(gaps, gaps[1:], strict=False) if b[1] > a[1]]
        involved = {e for pair in widens for e, _ in pair} or {e for e, _ in gaps}
        where = span(rows[rows["epochs"].isin(involved)].sort_values("epochs"))
        printed = ", ".join(f"gap {fmt(g)} at {e}" for e, g in gaps)
        why = "; ".join(f"full minus distilled widens from {fmt(a[1])} at {a[0]} to {fmt(b[1])} at {b[0]} epochs"
                        for a, b in widens) or "full minus distilled shrinks at every step"
        found.append(finding(TEXT, where, printed, "contradicts text" if widens else OK, f"{why}; {said(claim)}"))
    return found


def _fewer_epochs(paper: PaperNumbers, claim: Claim) -> list[Finding]:
    found = []
    cells = pd.concat([paper.rows(**selector) for selector in claim.cells])
    for _, rows in cells.groupby(["dataset", "ipc"], sort=False):
        ours = rows[rows["method"] == "kmeans"].iloc[0]
        table, row, column = locate(ours["source"])
        for _, other in rows[rows["method"] != "kmeans"].iterrows():
            where = (table, row, f"{column} vs {locate(other['source'])[2]}")
            printed = f"{ours['epochs']} vs {'NA' if pd.isna(other['epochs']) else other['epochs']}"
            if pd.isna(other["epochs"]):
                verdict, why = NA, "the competitor's epochs are not reported (NA)"
            elif ours["epochs"] < other["epochs"]:
                verdict, why = OK, "fewer epochs than the competitor"
            else:
                verdict, why = "contradicts text", "not fewer epochs than the competitor"
            found.append(finding(TEXT, where, printed, verdict, f"{why}; {said(claim)}"))
    return found


CHECKS: dict[str, Callable[[PaperNumbers, Claim], list[Finding]]] = {
    "value": _quoted,
    "min": _quoted,
    "max": _quoted,
    "difference": _quoted,
    "rising": _rising,
    "narrowing": _narrowing,
    "fewer-epochs": _fewer_epochs,
}


def audit(paper: PaperNumbers | None = None, ceilings: pd.DataFrame | None = None) -> list[Finding]:
    """Every rule's findings, rule by rule (the shipped CSVs unless others are given)."""
    paper = load_paper() if paper is None else paper
    ceilings = load_ceilings() if ceilings is None else ceilings
    return [
        *binary_between(paper),
        *class_sizes(paper),
        *distilled_vs_full(paper),
        *above_ceilings(paper, ceilings),
        *text_claims(paper),
    ]


# ---- output ----


def frame(findings: Iterable[Finding]) -> pd.DataFrame:
    return pd.DataFrame([asdict(f) for f in findings], columns=[f.name for f in fields(Finding)])


def flagged(rows: pd.DataFrame) -> pd.Series:
    return ~rows["verdict"].isin([OK, NA])


def _markdown_table(rows: pd.DataFrame) -> str:
    columns = ["table", "row", "column", "printed", "verdict", "explanation"]

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    body = (line(r) for r in rows[columns].itertuples(index=False))
    return "\n".join([line(columns), "|" + "---|" * len(columns), *body])


def summary_markdown(findings: list[Finding] | None = None) -> str:
    """A short paragraph block for the README, generated from the findings."""
    table = frame(audit() if findings is None else findings)
    bad = table[flagged(table)]

    def of(rule: str) -> pd.DataFrame:
        return bad[bad["rule"] == rule]

    n_binary = int((table["rule"] == BETWEEN).sum())
    split = table[(table["rule"] == SIZES) & (table["column"] == "Sensitivity and Specificity")]
    unreachable = of(SIZES)[of(SIZES)["column"].str.endswith("/Accuracy")]
    ceilings = of(CEILING).assign(value=lambda f: f["printed"].astype(float)).groupby("table")["value"]
    lines = [
        "**Audit of the printed numbers** (`python analysis/audit.py --out DIR`; reads only the transcribed tables "
        f"and `analysis/ceilings.csv`, trains nothing): {len(bad)} of {len(table)} findings are flagged.",
        f"- Table 5: {len(of(BETWEEN))} of {n_binary} accuracies lie outside the interval between their sensitivity "
        "and specificity, which no confusion matrix allows.",
    ]
    if len(split):
        lines.append(
            f"- Class sizes: {split['explanation'].iloc[0]}; with that split {len(unreachable)} of {n_binary} printed "
            "accuracies are unreachable."
        )
    lines.append(
        f"- {len(of(ABOVE_FULL))} distilled accuracies exceed the full-training-set accuracy of the same network and "
        "epochs: " + ", ".join(f"{r.table} row {r.row} ({r.printed})" for r in of(ABOVE_FULL).itertuples()) + "."
    )
    lines.append(
        f"- {len(of(CEILING))} accuracies exceed a published ceiling ("
        + "; ".join(f"{t}: {len(v)}, up to {fmt(v.max())}" for t, v in ceilings)
        + "; ceilings and their sources in `analysis/ceilings.csv`)."
    )
    lines.append(f"- The text disagrees with the tables {len(of(TEXT))} times:")
    for r in of(TEXT).itertuples():
        why = r.explanation.split('; "')[0].removeprefix(r.printed).removeprefix("; ")
        lines.append(f"  - {r.table}, row {r.row}, column {r.column}: {r.printed}" + (f" ({why})" if why else ""))
    return "\n".join(lines)


def report_markdown(findings: list[Finding]) -> str:
    """``audit.md``: the summary, a count per rule, then per rule the flagged findings and, folded, the rest."""
    table = frame(findings)
    lines = [
        "# Audit of the paper's printed numbers",
        "",
        "Inputs: `analysis/paper_numbers.csv` (the paper's tables; every cell with its table, row and column) and "
        "`analysis/ceilings.csv` (published full-data accuracies, each with its source). No training. Values are "
        "percentages as printed; pp = percentage points.",
        "",
        summary_markdown(findings),
        "",
        "| rule | findings | flagged |",
        "|---|---|---|",
    ]
    for rule in RULES:
        mine = table["rule"] == rule
        lines.append(f"| {rule} | {mine.sum()} | {(flagged(table) & mine).sum()} |")
    for rule in RULES:
        rows = table[table["rule"] == rule]
        bad, rest = rows[flagged(rows)], rows[~flagged(rows)]
        lines += ["", f"## {rule}", "", _markdown_table(bad) if len(bad) else "Nothing flagged."]
        if len(rest):
            folded = f"<details><summary>{len(rest)} not flagged</summary>"
            lines += ["", folded, "", _markdown_table(rest), "", "</details>"]
    return "\n".join(lines) + "\n"


def write_audit(out: Path) -> list[Path]:
    """Write ``audit.md`` and ``audit.csv`` into ``out`` (created if missing); return their paths."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    findings = audit()
    md, csv = out / "audit.md", out / "audit.csv"
    md.write_text(report_markdown(findings), encoding="utf-8")
    frame(findings).to_csv(csv, index=False)
    return [md, csv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    args = parser.parse_args(argv)
    try:
        paths = write_audit(args.out)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
