"""Audit a paper's printed numbers for internal consistency, without training anything.

    python analysis/audit.py --out DIR [--data DIR]

A paper is a folder of data files (this paper's lie beside this module): ``paper_numbers.csv`` (the
transcribed tables), ``paper_text.csv`` (claims of the text, verbatim, with the cells they are
about), ``test_sets.csv`` (test-set sizes; per class where known, ``positive``/``negative`` for a
known binary split, an empty class where only the total is known) and ``ceilings.csv`` (published
full-data accuracies, each with its source). Auditing another paper takes another such folder, no
code. Rates are checked with mlscorecheck (Kovacs & Fazekas, Neurocomputing 2024) where it applies,
beside raydistill's own rules for what it has no check of. Writes ``audit.md`` and ``audit.csv``:
one row per finding, naming the check that produced it and the table, row and column of the printed
cell(s) it comes from.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields

import pandas as pd
from mlscorecheck.check.binary import check_1_testset_no_kfold

from analysis.paper import CSV_PATH, INT_COLUMNS, PaperNumbers, load_paper

logging.getLogger("mlscorecheck").setLevel(logging.WARNING)  # it logs every step of every check to stderr

DATA = CSV_PATH.parent  # this paper's data files
PAPER_TEXT, TEST_SETS, CEILINGS = "paper_text.csv", "test_sets.csv", "ceilings.csv"
CEILINGS_PATH = DATA / CEILINGS
SIZE_LIMIT = 10_000  # every two-decimal percentage is k/10000, so some size up to this always fits

BINARY = "binary rates from one confusion matrix"
MULTICLASS = "multiclass scores from one confusion matrix"
BETWEEN = "accuracy between sensitivity and specificity"
SIZES = "test-set class sizes from two-decimal rounding"
ABOVE_FULL = "distilled above full data"
CEILING = "above a published ceiling"
TEXT = "text against tables"
CHECK = {  # rule -> the check that produces its findings
    BINARY: "mlscorecheck.binary",
    MULTICLASS: "mlscorecheck.multiclass",
    BETWEEN: "raydistill.interval",
    SIZES: "raydistill.class-sizes",
    ABOVE_FULL: "raydistill.above-full",
    CEILING: "raydistill.ceiling",
    TEXT: "raydistill.text",
}
RULES = tuple(CHECK)
OK, NA = "ok", "n/a"
SCORES = {"accuracy": "acc", "sensitivity": "sens", "specificity": "spec"}  # metric -> mlscorecheck's name
SPLIT = ("positive", "negative")  # test_sets.csv classes of a known binary split

Where = tuple[str, str, str]  # (table, row, column) in the paper's own labels


@dataclass(frozen=True)
class Finding:
    """One verdict on printed cell(s), named by the paper's table, row and column."""

    rule: str
    check: str
    table: str
    row: str
    column: str
    printed: str
    verdict: str
    explanation: str


def finding(rule: str, where: Where, printed: str, verdict: str, explanation: str) -> Finding:
    return Finding(rule, CHECK[rule], *where, printed, verdict, explanation)


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


def _selector(text: str) -> dict:
    """``table=1 dataset=mnist`` -> ``{"table": 1, "dataset": "mnist"}`` (integer keys as ints)."""
    pairs = (word.split("=", 1) for word in text.split())
    return {key: int(value) if key in INT_COLUMNS else value for key, value in pairs}


def load_claims(path: Path = DATA / PAPER_TEXT) -> tuple[Claim, ...]:
    """``paper_text.csv``: a claim a row; ``cells`` holds ``;``-separated selectors of ``key=value``
    words, ``value`` the number as the text prints it (empty for the kinds that compare cells)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"quote", "where", "kind", "cells", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path.name}: missing columns {sorted(missing)}")
    claims = []
    for row in frame.itertuples(index=False):
        if row.kind not in CLAIM_KINDS or (CLAIM_KINDS[row.kind] is _quoted) != (row.value != ""):
            raise ValueError(f"{path.name}: kind {row.kind!r} with value {row.value!r} for {row.quote[:60]!r}")
        cells = tuple(_selector(s) for s in row.cells.split(";"))
        value = float(row.value) if row.value else None
        claims.append(Claim(row.quote, row.where, row.kind, cells, value, len(row.value.partition(".")[2])))
    return tuple(claims)


def load_test_sets(path: Path = DATA / TEST_SETS) -> pd.DataFrame:
    """``test_sets.csv``: images per dataset and class, each with its source."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"dataset", "class", "images", "source"} - set(frame.columns)
    if missing or (frame["source"].str.strip() == "").any():
        raise ValueError(f"{path.name}: every row needs dataset, class, images and a source")
    frame["images"] = frame["images"].astype(int)
    return frame


def testset(test_sets: pd.DataFrame, dataset: str) -> tuple[dict[str, int], str]:
    """A dataset's test set: images per class (``""`` where only the total is known), and its sources."""
    rows = test_sets[test_sets["dataset"] == dataset]
    if rows.empty:
        raise ValueError(f"{TEST_SETS} has no test set for {dataset}")
    return dict(zip(rows["class"], rows["images"], strict=True)), "; ".join(dict.fromkeys(rows["source"]))


def binary_splits(classes: dict[str, int]) -> list[tuple[int, int]]:
    """(n_pos, n_neg): the known split, or every split of the known total into two non-empty classes."""
    if set(classes) == set(SPLIT):
        return [(classes["positive"], classes["negative"])]
    if set(classes) == {""}:
        return [(p, classes[""] - p) for p in range(1, classes[""])]
    raise ValueError(f"a binary test set needs {' and '.join(SPLIT)} classes or only a total, got {sorted(classes)}")


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


def reachable(acc: float, sens: float, spec: float, n_pos: int, n_neg: int) -> bool:
    """raydistill's rule: some number of correct images that the printed rates allow prints as ``acc``."""
    return bool(set(accuracies(sens, spec, n_pos, n_neg)) & set(counts(acc, n_pos + n_neg)))


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


def _binary_cells(paper: PaperNumbers) -> pd.DataFrame:
    """The cells of every table that prints sensitivity."""
    return paper.frame[paper.frame["table"].isin(paper.rows(metric="sensitivity")["table"])]


def binary_rows(paper: PaperNumbers) -> list[pd.DataFrame]:
    """Those tables' rows (one network, method and epochs each), indexed by metric, in the paper's order."""
    keys = ["table", "dataset", "model", "method", "ipc", "epochs"]
    return [group.set_index("metric") for _, group in _binary_cells(paper).groupby(keys, sort=False, dropna=False)]


def row_rates(row: pd.DataFrame) -> tuple[float, float, float]:
    """A binary row's printed (accuracy, sensitivity, specificity)."""
    return tuple(float(row.loc[m, "value"]) for m in SCORES)


def _rates_text(row: pd.DataFrame) -> str:
    return ", ".join(f"{m} {fmt(v)}" for m, v in zip(SCORES, row_rates(row), strict=True))


def binary_consistent(row: pd.DataFrame, n_pos: int, n_neg: int) -> bool:
    """mlscorecheck: whether one confusion matrix with these class sizes gives every printed rate of
    the row to within half a unit of its last printed digit (scores and eps as fractions)."""
    scores = {SCORES[m]: row.loc[m, "value"] / 100 for m in SCORES}
    eps = {SCORES[m]: 0.5 * 10.0 ** -int(row.loc[m, "decimals"]) / 100 for m in SCORES}
    return not check_1_testset_no_kfold(testset={"p": n_pos, "n": n_neg}, scores=scores, eps=eps)["inconsistency"]


def binary_mlscorecheck(paper: PaperNumbers, test_sets: pd.DataFrame) -> list[Finding]:
    """mlscorecheck's binary check of every row: one confusion matrix of the test set gives its three rates."""
    found = []
    for row in binary_rows(paper):
        classes, source = testset(test_sets, row["dataset"].iloc[0])
        splits = binary_splits(classes)
        fits = [split for split in splits if binary_consistent(row, *split)]
        sizes = (
            f"n_pos = {splits[0][0]}, n_neg = {splits[0][1]}"
            if len(splits) == 1
            else f"any split of the {sum(classes.values())} test images into positives and negatives"
        )
        why = (
            f"{'a' if fits else 'no'} confusion matrix with {sizes} ({source}) gives the three rates, each to "
            "within half a unit of its last printed digit"
        )
        if fits and len(splits) > 1:
            why += f"; splits that fit: {len(fits)} of {len(splits)}, e.g. n_pos = {fits[0][0]}, n_neg = {fits[0][1]}"
        verdict = OK if fits else "inconsistent"
        found.append(finding(BINARY, locate(row.loc["accuracy", "source"]), _rates_text(row), verdict, why))
    return found


def multiclass_mlscorecheck(paper: PaperNumbers, test_sets: pd.DataFrame) -> list[Finding]:
    """Where a multiclass test set's class counts are known: whether the paper prints what mlscorecheck's
    multiclass checks need. Accuracy alone they cannot test, so such a table gets an n/a finding."""
    per_class = test_sets[~test_sets["class"].isin(["", *SPLIT])]
    cells = paper.frame[paper.frame["dataset"].isin(per_class["dataset"])]
    found = []
    for (table, dataset), rows in cells.groupby(["table", "dataset"], sort=False):
        others = sorted(set(rows["metric"]) - {"accuracy"})
        if others:
            raise ValueError(f"Table {table} prints {', '.join(others)} for {dataset}: the multiclass checks need "
                             "their averaging (micro or macro), which the data files do not give")
        classes, source = testset(test_sets, dataset)
        total = sum(classes.values())
        why = (
            "not run: only accuracies are printed, and the multiclass checks test scores against each other; an "
            f"accuracy alone (in mlscorecheck's terms the micro-averaged sensitivity) only has to be some k/{total}. "
            f"Test set: {len(classes)} classes, {total} images ({source})"
        )
        found.append(finding(MULTICLASS, span(rows), f"{len(rows)} accuracies", NA, why))
    return found


def binary_between(paper: PaperNumbers) -> list[Finding]:
    """Accuracy is the class-size-weighted mean of sensitivity and specificity, so it lies between them
    whatever the class sizes (mlscorecheck needs them)."""
    found = []
    for row in binary_rows(paper):
        acc, sens, spec = row_rates(row)
        low, high = sorted((sens, spec))
        inside = low - 0.01 <= acc <= high + 0.01  # each of the three may be off by half a hundredth
        why = f"accuracy must lie in [{fmt(low)}, {fmt(high)}]"
        if not inside:
            why += f"; {fmt(acc)} is {fmt(min(abs(acc - low), abs(acc - high)))} pp outside"
        verdict = OK if inside else "impossible"
        found.append(finding(BETWEEN, locate(row.loc["accuracy", "source"]), _rates_text(row), verdict, why))
    return found


def class_sizes(paper: PaperNumbers, test_sets: pd.DataFrame) -> list[Finding]:
    """Per table that prints sensitivity: the class sizes its rates imply, and the accuracies those allow."""
    return [
        f
        for (table, dataset), rows in _binary_cells(paper).groupby(["table", "dataset"], sort=False)
        for f in _class_sizes(PaperNumbers(rows), f"Table {table}", *testset(test_sets, dataset))
    ]


def _class_sizes(paper: PaperNumbers, table: str, classes: dict[str, int], source: str) -> list[Finding]:
    total = sum(classes.values())
    rates = {m: paper.rows(metric=m) for m in ("sensitivity", "specificity")}
    everywhere = (table, "all epochs, both column groups")
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
                f"the paper states {total} test images in all ({source})",
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
                f"every other {row['metric']} of {table} is some k/{n}, this one is not: "
                f"{below}/{n} = {fmt(100 * below / n)}, {below + 1}/{n} = {fmt(100 * (below + 1) / n)}",
            )
        )
    for row in binary_rows(paper):
        acc, sens_v, spec_v = row_rates(row)
        allowed = accuracies(sens_v, spec_v, n_pos, n_neg)
        why = (
            f"with n_pos = {n_pos}, n_neg = {n_neg}, sensitivity {fmt(sens_v)} and specificity {fmt(spec_v)} allow "
            "accuracy " + " or ".join(f"{k}/{total} = {fmt(100 * k / total)}" for k in allowed)
        )
        if not counts(acc, total):
            why += f"; no k/{total} prints as {fmt(acc)} at all"
        verdict = OK if reachable(acc, sens_v, spec_v, n_pos, n_neg) else "impossible"
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


def text_claims(paper: PaperNumbers, claims: Iterable[Claim]) -> list[Finding]:
    """Each claim of the text checked against the printed cells it is about."""
    return [f for claim in claims for f in CLAIM_KINDS[claim.kind](paper, claim)]


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


CLAIM_KINDS: dict[str, Callable[[PaperNumbers, Claim], list[Finding]]] = {
    "value": _quoted,
    "min": _quoted,
    "max": _quoted,
    "difference": _quoted,
    "rising": _rising,
    "narrowing": _narrowing,
    "fewer-epochs": _fewer_epochs,
}


def audit(data: Path = DATA) -> list[Finding]:
    """Every rule's findings, rule by rule, on the paper whose data files are in ``data``."""
    paper, test_sets = load_paper(data / CSV_PATH.name), load_test_sets(data / TEST_SETS)
    return [
        *binary_mlscorecheck(paper, test_sets),
        *multiclass_mlscorecheck(paper, test_sets),
        *binary_between(paper),
        *class_sizes(paper, test_sets),
        *distilled_vs_full(paper),
        *above_ceilings(paper, load_ceilings(data / CEILINGS)),
        *text_claims(paper, load_claims(data / PAPER_TEXT)),
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
    binary_tables = ", ".join(dict.fromkeys(table.loc[table["rule"] == BETWEEN, "table"]))
    multiclass = table[table["rule"] == MULTICLASS]
    split = table[(table["rule"] == SIZES) & (table["column"] == "Sensitivity and Specificity")]
    unreachable = of(SIZES)[of(SIZES)["column"].str.endswith("/Accuracy")]
    ceilings = of(CEILING).assign(value=lambda f: f["printed"].astype(float)).groupby("table")["value"]
    lines = [
        "**Audit of the printed numbers** (`python analysis/audit.py --out DIR`; reads only the paper's data files: "
        "tables, text claims, test sets and published ceilings; trains nothing): "
        f"{len(bad)} of {len(table)} findings are flagged, each naming the check that produced it "
        "(`mlscorecheck.*` or raydistill's own `raydistill.*`).",
    ]
    if n_binary:
        lines += [
            f"- {binary_tables}, mlscorecheck's binary check: for {len(of(BINARY))} of {n_binary} rows no confusion "
            "matrix of the test set gives the printed accuracy, sensitivity and specificity, each to within half a "
            "unit of its last printed digit.",
            f"- {binary_tables}: {len(of(BETWEEN))} of {n_binary} accuracies lie outside the interval between their "
            "sensitivity and specificity, which no confusion matrix allows.",
        ]
    if len(multiclass):
        lines.append(
            f"- mlscorecheck's multiclass check does not run on {', '.join(dict.fromkeys(multiclass['table']))}: "
            "they print only accuracies, which it cannot test alone (class counts in `test_sets.csv`)."
        )
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
        "Inputs: the paper's data files, `paper_numbers.csv` (the paper's tables; every cell with its table, row and "
        "column), `paper_text.csv` (claims of the text, verbatim, with the cells they are about), `test_sets.csv` "
        "(test-set sizes, each with its source) and `ceilings.csv` (published full-data accuracies, each with its "
        "source). No training. Values are percentages as printed; pp = percentage points. Each rule's findings come "
        "from one check: `mlscorecheck.*` (the mlscorecheck package's consistency tests) or `raydistill.*` "
        "(raydistill's own rules, for what mlscorecheck has no test of).",
        "",
        summary_markdown(findings),
        "",
        "| rule | check | findings | flagged |",
        "|---|---|---|---|",
    ]
    for rule in RULES:
        mine = table["rule"] == rule
        lines.append(f"| {rule} | `{CHECK[rule]}` | {mine.sum()} | {(flagged(table) & mine).sum()} |")
    for rule in RULES:
        rows = table[table["rule"] == rule]
        bad, rest = rows[flagged(rows)], rows[~flagged(rows)]
        lines += ["", f"## {rule} (`{CHECK[rule]}`)", "", _markdown_table(bad) if len(bad) else "Nothing flagged."]
        if len(rest):
            folded = f"<details><summary>{len(rest)} not flagged</summary>"
            lines += ["", folded, "", _markdown_table(rest), "", "</details>"]
    return "\n".join(lines) + "\n"


def write_audit(out: Path, data: Path = DATA) -> list[Path]:
    """Audit the paper in ``data``; write ``audit.md`` and ``audit.csv`` into ``out`` (created if missing)
    and return their paths."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    out.mkdir(parents=True, exist_ok=True)
    findings = audit(data)
    md, csv = out / "audit.md", out / "audit.csv"
    md.write_text(report_markdown(findings), encoding="utf-8")
    frame(findings).to_csv(csv, index=False)
    return [md, csv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of a paper's data files (default: this one)")
    args = parser.parse_args(argv)
    try:
        paths = write_audit(args.out, args.data)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
