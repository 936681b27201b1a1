"""analysis/audit.py: rounding arithmetic, each rule on hand-made rows, made-up papers from data files
only, mlscorecheck against raydistill's own rule, and the findings on the paper."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis import audit
from analysis.paper import CSV_PATH, PaperNumbers, load_paper

ROOT = Path(__file__).resolve().parent.parent
PAPER_TEXT = Path(__file__).resolve().parents[2] / "shared" / "paper"


def _printed(k: int, n: int) -> float:
    return round(100 * k / n, 2)


def _csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _paper(folder: Path, rows: list[tuple]) -> PaperNumbers:
    """A paper_numbers.csv of (table, dataset, model, method, ipc, epochs, metric, value, source) rows, read back."""
    return load_paper(_csv(folder / CSV_PATH.name, list(pd.read_csv(CSV_PATH, nrows=0).columns), rows))


def _test_sets(classes: dict[str, int], dataset: str = "ocid") -> pd.DataFrame:
    rows = [(dataset, name, n, "made up") for name, n in classes.items()]
    return pd.DataFrame(rows, columns=["dataset", "class", "images", "source"])


def _binary_row(epochs: int, acc: float, sens: float | str, spec: float) -> list[tuple]:
    """A Table 5 row; a rate given as text is printed as it is, a number with two decimals."""
    return [
        (5, "ocid", "resnet34", "kmeans", 10, epochs, m, value if isinstance(value, str) else f"{value:.2f}",
         f"Table 5, row {epochs}, column Distilled/{m}")
        for m, value in (("accuracy", acc), ("sensitivity", sens), ("specificity", spec))
    ]


@pytest.fixture(scope="module")
def findings() -> pd.DataFrame:
    return audit.frame(audit.audit())


def test_counts_recover_every_fraction() -> None:
    for n in range(1, 160):
        for k in range(n + 1):
            assert k in audit.counts(_printed(k, n), n)
    assert audit.counts(84.21, 19) == [16] and audit.counts(76.68, 95) == [] and audit.counts(87.09, 31) == []
    with pytest.raises(ValueError):
        audit.counts(50.0, 0)


@pytest.mark.parametrize(("n", "ks"), [(19, (16, 13, 17, 19, 10)), (31, (27, 18, 19, 17, 28))])
def test_class_size_inference_recovers_known_counts(n: int, ks: tuple[int, ...]) -> None:
    printed = [_printed(k, n) for k in ks]
    smallest = audit.smallest_size(printed)
    assert all(audit.counts(p, smallest) for p in printed)  # consistent
    assert not any(all(audit.counts(p, m) for p in printed) for m in range(1, smallest))  # and nothing smaller is
    assert n in audit.sizes(printed, n)  # the true size is consistent too
    assert smallest == n  # these values pin it down


def test_split_of_a_known_test_set() -> None:
    n_pos, n_neg = 19, 31
    sens = [_printed(k, n_pos) for k in (16, 13, 17)]
    spec = [_printed(k, n_neg) for k in (27, 18, 19)]
    best, splits = audit.best_splits(sens, spec, n_pos + n_neg)
    assert best == 6 and splits == [(19, 31)]
    assert audit.accuracies(sens[0], spec[0], n_pos, n_neg) == [16 + 27]
    assert audit.accuracies(76.68, 87.10, 95, 31) == [72 + 27, 73 + 27]  # no exact count: both neighbours


def test_binary_rules_flag_inconsistent_rows_and_pass_consistent_one(tmp_path: Path) -> None:
    paper = _paper(
        tmp_path,
        _binary_row(200, _printed(43, 50), _printed(16, 19), _printed(27, 31))  # TP 16/19, TN 27/31: 86.00
        + _binary_row(300, 91.40, 84.21, 87.10)  # above both rates
        + _binary_row(400, 60.00, 84.21, 61.29)  # below both rates
        + _binary_row(500, 86.50, 84.21, 87.10),  # between them, but no k/50
    )
    expected = {"200": "ok", "300": "impossible", "400": "impossible", "500": "impossible"}
    between = {f.row: f.verdict for f in audit.binary_between(paper)}
    assert between == {**expected, "500": "ok"}  # the interval rule cannot see the last one
    sizes = {f.row: f.verdict for f in audit.class_sizes(paper, _test_sets({"": 50})) if f.column.endswith("/accuracy")}
    assert sizes == expected
    for classes in ({"": 50}, {"positive": 19, "negative": 31}):  # only the total known, or the split
        found = audit.binary_mlscorecheck(paper, _test_sets(classes))
        assert {f.row: f.verdict for f in found} == {r: "inconsistent" if v != "ok" else v for r, v in expected.items()}
        assert {f.check for f in found} == {"mlscorecheck.binary"}
    only_total = audit.binary_mlscorecheck(paper, _test_sets({"": 50}))[0].explanation
    assert only_total.endswith("; splits that fit: 1 of 49, e.g. n_pos = 19, n_neg = 31")  # 1..49 positives
    with pytest.raises(ValueError):
        audit.binary_mlscorecheck(paper, _test_sets({"a": 20, "b": 20, "c": 10}))


@pytest.mark.parametrize(("sens", "fits"), [("84.21", True), ("84.20", False), ("84.2", True)])
def test_eps_is_half_a_unit_of_the_last_printed_digit(tmp_path: Path, sens: str, fits: bool) -> None:
    # TP 16/19 = 84.2105..%, TN 27/31, accuracy 43/50: "84.20" is 0.0105 pp off (eps 0.005), "84.2" 0.0105 (eps 0.05)
    row = audit.binary_rows(_paper(tmp_path, _binary_row(200, 86.00, sens, _printed(27, 31))))[0]
    assert row.loc["sensitivity", "decimals"] == len(sens.partition(".")[2])
    assert audit.binary_consistent(row, 19, 31) is fits


def test_mlscorecheck_agrees_with_raydistill_on_table5_with_95_and_31(findings: pd.DataFrame) -> None:
    rows = audit.binary_rows(load_paper())
    assert len(rows) == 10
    theirs = [audit.binary_consistent(row, 95, 31) for row in rows]
    ours = [audit.reachable(*audit.row_rates(row), 95, 31) for row in rows]
    assert theirs == ours == [False] * 10
    sizes = findings[(findings["rule"] == audit.SIZES) & findings["column"].str.endswith("/Accuracy")]
    assert list(sizes["verdict"] == "ok") == theirs  # the audit's own verdicts, at its inferred 95/31


def test_mlscorecheck_agrees_with_raydistill_on_made_up_rows_with_95_and_31(tmp_path: Path) -> None:
    matrices = [(tp, tn) for tp in range(0, 96, 19) for tn in range(0, 32, 6)]
    rows = []
    for i, (tp, tn) in enumerate(matrices):
        acc, sens, spec = _printed(tp + tn, 126), _printed(tp, 95), _printed(tn, 31)
        rows += _binary_row(2 * i, acc, sens, spec) + _binary_row(2 * i + 1, acc + 0.40, sens, spec)
    paper = _paper(tmp_path, rows)
    theirs = [audit.binary_consistent(row, 95, 31) for row in audit.binary_rows(paper)]
    ours = [audit.reachable(*audit.row_rates(row), 95, 31) for row in audit.binary_rows(paper)]
    assert theirs == ours == [True, False] * len(matrices)


def test_real_paper_steady_increase_and_quoted_numbers(findings: pd.DataFrame) -> None:
    text = findings[findings["rule"] == audit.TEXT]
    drops = text[text["verdict"] == "contradicts text"]
    lenet = drops[(drops["table"] == "Table 1") & (drops["row"] == "10/MNIST/LeNet")]
    assert list(lenet["printed"]) == ["99.57 -> 99.06"] and list(lenet["column"]) == ["400, 500"]
    rising = text[text["explanation"].str.contains("steady increase")]
    assert len(rising) == 18  # every row of Tables 1-2
    assert set(rising.loc[rising["verdict"] != "ok", "row"]) == {"10/MNIST/LeNet", "10/CIFAR-10/LeNet"}
    quoted = text[(text["row"] == "10/FASHION/LeNet") & (text["column"] == "600")].iloc[0]
    assert quoted["verdict"] == "differs" and quoted["printed"] == "text 98.75, table 98.61"
    assert "10/FASHION/ResNet, 600" in quoted["explanation"]
    baseline = text[(text["row"] == "10/FASHION/Baseline") & (text["column"] == "600")].iloc[0]
    assert baseline["verdict"] == "ok"  # the 99.52 in the same sentence matches


def test_real_paper_binary_and_class_sizes(findings: pd.DataFrame) -> None:
    between = findings[findings["rule"] == audit.BETWEEN]
    assert len(between) == 10
    passing = between[between["verdict"] == "ok"]
    assert list(zip(passing["row"], passing["column"], strict=True)) == [("200", "Distilled OCID/Accuracy")]
    sizes = findings[findings["rule"] == audit.SIZES]
    split = sizes[sizes["column"] == "Sensitivity and Specificity"].iloc[0]
    assert split["verdict"] == "impossible" and "n_pos = 95, n_neg = 31" in split["explanation"]
    misfits = sizes[(sizes["verdict"] == "inconsistent") & ~sizes["row"].str.startswith("all")]
    assert set(misfits["printed"]) == {"76.68", "70.52", "87.09"}
    assert (sizes[sizes["column"].str.endswith("/Accuracy")]["verdict"] == "impossible").all()


def test_real_paper_full_data_and_ceilings(findings: pd.DataFrame) -> None:
    above = findings[(findings["rule"] == audit.ABOVE_FULL) & (findings["verdict"] == "above full data")]
    assert set(above["table"]) == {"Table 5"} and set(above["row"]) == {"300", "400", "500", "600"}
    ceil = findings[findings["rule"] == audit.CEILING].set_index(["table", "row", "column"])
    assert ceil.loc[("Table 1", "10/MNIST/Baseline", "600"), "verdict"] == "above ceiling"  # 99.67 > Keras 99.25
    assert ceil.loc[("Table 1", "10/FASHION/LeNet", "200"), "verdict"] == "ok"  # 96.50 <= 96.7
    assert ("Table 1", "10/MNIST/LeNet", "600") not in ceil.index  # the MNIST ceiling is the Baseline's only
    assert ceil.loc[("Table 4", "10/CIFAR-10", "Ours/N2"), "verdict"] == "above ceiling"
    assert ceil.loc[("Table 4", "10/CIFAR-10", "KIP-Scatternet/N2"), "verdict"] == "ok"
    for column in ("table", "row", "column"):
        assert (findings[column].str.strip() != "").all()


def test_ceilings_need_a_source(tmp_path: Path) -> None:
    ceilings = audit.load_ceilings()
    assert (ceilings["source"].str.len() > 10).all() and set(ceilings["dataset"]) <= set(load_paper().frame["dataset"])
    bad = tmp_path / "ceilings.csv"
    bad.write_text("dataset,model,value,what,source\nmnist,,99.9,a number,\n", encoding="utf-8")
    with pytest.raises(ValueError):
        audit.load_ceilings(bad)


def test_claims_quote_the_paper_verbatim() -> None:
    claims = audit.load_claims()
    assert len(claims) == 29 and {c.kind for c in claims} == set(audit.CLAIM_KINDS)
    assert {(c.value, c.decimals) for c in claims if c.kind == "max"} >= {(91.8, 1), (91.8, 2)}  # "91.8%", "91.80%"
    texts = sorted(PAPER_TEXT.glob("*.txt"))
    if not texts:
        pytest.skip("paper text not present")
    paper = " ".join(texts[0].read_text(encoding="utf-8").split())
    missing = [c.quote for c in claims if " ".join(c.quote.split()) not in paper]
    assert missing == []


def test_data_files_are_checked(tmp_path: Path) -> None:
    header = ["quote", "where", "kind", "cells", "value"]
    for kind, value in (("value", ""), ("rising", "1.00"), ("guess", "1.00")):
        bad = _csv(tmp_path / "paper_text.csv", header, [("a claim", "Abstract", kind, "table=1", value)])
        with pytest.raises(ValueError):
            audit.load_claims(bad)
    bad = _csv(tmp_path / "test_sets.csv", ["dataset", "class", "images", "source"], [("ocid", "", "126", "")])
    with pytest.raises(ValueError):
        audit.load_test_sets(bad)
    sets = audit.load_test_sets()
    assert sets.groupby("dataset")["images"].sum().to_dict() == {
        "cifar10": 10_000, "fashion-mnist": 10_000, "mnist": 10_000, "ocid": 126}
    assert set(sets["dataset"]) == set(load_paper().frame["dataset"])


def test_multiclass_check_runs_only_where_more_than_accuracy_is_printed(findings: pd.DataFrame, tmp_path: Path) -> None:
    multi = findings[findings["rule"] == audit.MULTICLASS]
    assert len(multi) == 12 and set(multi["verdict"]) == {"n/a"} and set(multi["check"]) == {"mlscorecheck.multiclass"}
    assert set(multi["table"]) == {"Table 1", "Table 2", "Table 3", "Table 4"}
    assert multi["explanation"].str.startswith("not run: only accuracies are printed").all()
    paper = _paper(tmp_path, [(1, "mnist", "lenet", "kmeans", 10, 200, "sensitivity", "97.00",
                               "Table 1, row 10/MNIST/LeNet, column 200")])
    with pytest.raises(ValueError, match="averaging"):
        audit.multiclass_mlscorecheck(paper, audit.load_test_sets())


TOY = {  # (method, epochs): (true positives of 40, true negatives of 60); the split is the only one that fits
    ("full", 10): (33, 53), ("full", 20): (34, 54), ("full", 30): (35, 55),
    ("kmeans", 10): (29, 47), ("kmeans", 20): (31, 49), ("kmeans", 30): (33, 51),
}


def _toy(folder: Path, classes: dict[str, int], accuracy: dict[tuple[str, int], str]) -> Path:
    """A made-up paper in data files only: one binary table of a 40 + 60 image test set."""
    folder.mkdir()
    rows = []
    for (method, epochs), (tp, tn) in TOY.items():
        printed = {"accuracy": accuracy.get((method, epochs), f"{_printed(tp + tn, 100):.2f}"),
                   "sensitivity": f"{_printed(tp, 40):.2f}", "specificity": f"{_printed(tn, 60):.2f}"}
        group = "Full" if method == "full" else "Distilled"
        rows += [(1, "toy", "cnn", method, 5 if method == "kmeans" else "", epochs, metric, value,
                  f"Table 1, row {epochs}, column {group}/{metric.capitalize()}") for metric, value in printed.items()]
    _csv(folder / CSV_PATH.name, list(pd.read_csv(CSV_PATH, nrows=0).columns), rows)
    _csv(folder / "test_sets.csv", ["dataset", "class", "images", "source"],
         [("toy", name, n, "Section 2") for name, n in classes.items()])
    _csv(folder / "paper_text.csv", ["quote", "where", "kind", "cells", "value"],
         [("the distilled images reach 84.00%", "Abstract", "value", "table=1 method=kmeans epochs=30 metric=accuracy",
           "84.00")])
    _csv(folder / "ceilings.csv", ["dataset", "model", "value", "what", "source"], [])
    return folder


@pytest.mark.parametrize("classes", [{"": 100}, {"positive": 40, "negative": 60}], ids=["total", "split"])
def test_made_up_papers_need_only_data_files(tmp_path: Path, classes: dict[str, int]) -> None:
    consistent = audit.frame(audit.audit(_toy(tmp_path / "consistent", classes, {})))
    assert (consistent["check"] == consistent["rule"].map(audit.CHECK)).all()
    assert set(consistent["check"]) == set(audit.CHECK.values()) - {"mlscorecheck.multiclass", "raydistill.ceiling"}
    binary = consistent[consistent["rule"] == audit.BINARY]
    assert len(binary) == 6 and (binary["verdict"] == "ok").all()
    assert not audit.flagged(consistent).any()  # every rule passes a consistent paper
    assert consistent.loc[consistent["rule"] == audit.TEXT, "printed"].tolist() == ["text 84.00, table 84.00"]

    # 80.50 lies between sensitivity 77.50 and specificity 81.67, but no k/100 prints as it
    inconsistent = audit.frame(audit.audit(_toy(tmp_path / "inconsistent", classes, {("kmeans", 20): "80.50"})))
    bad = inconsistent[audit.flagged(inconsistent)]
    hit = bad[bad["rule"] == audit.BINARY]
    assert hit[["check", "row", "column", "verdict"]].values.tolist() == [
        ["mlscorecheck.binary", "20", "Distilled/Accuracy", "inconsistent"]]
    sizes = "any split of the 100 test images" if "" in classes else "n_pos = 40, n_neg = 60"
    assert sizes in hit["explanation"].iloc[0]
    assert set(bad["check"]) == {"mlscorecheck.binary", "raydistill.class-sizes"}  # the interval rule misses it
    md, csv_path = audit.write_audit(tmp_path / "out", tmp_path / "inconsistent")
    assert "## binary rates from one confusion matrix (`mlscorecheck.binary`)" in md.read_text(encoding="utf-8")
    assert pd.read_csv(csv_path)["check"].notna().all()


def test_write_audit_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md, csv = audit.write_audit(tmp_path / "out")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["rule", "check", "table", "row", "column", "printed", "verdict", "explanation"]
    report = md.read_text(encoding="utf-8")
    assert all(f"## {rule} (`{audit.CHECK[rule]}`)" in report for rule in audit.RULES)
    assert report.count("| Table ") == len(table)  # every finding appears once in the markdown
    assert audit.summary_markdown().startswith("**Audit of the printed numbers**")

    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    assert audit.main(["--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file" in err

    done = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "audit.py"), "--out", str(tmp_path / "script")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "script" / "audit.csv").read_text(encoding="utf-8") == csv.read_text(encoding="utf-8")
