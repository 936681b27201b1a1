"""analysis/audit.py: rounding arithmetic, each rule on hand-made rows, and the findings on the paper."""

from __future__ import annotations

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


def _paper(rows: list[tuple]) -> PaperNumbers:
    """A paper_numbers-shaped table from (table, dataset, model, method, ipc, epochs, metric, value, source) rows."""
    frame = pd.DataFrame(rows, columns=pd.read_csv(CSV_PATH, nrows=0).columns)
    frame[["ipc", "epochs", "table"]] = frame[["ipc", "epochs", "table"]].astype("Int64")
    return PaperNumbers(frame)


def _binary_row(epochs: int, acc: float, sens: float, spec: float) -> list[tuple]:
    return [
        (5, "ocid", "resnet34", "kmeans", 10, epochs, m, value, f"Table 5, row {epochs}, column Distilled/{m}")
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


def test_binary_rule_flags_inconsistent_row_and_passes_consistent_one() -> None:
    paper = _paper(
        _binary_row(200, _printed(43, 50), _printed(16, 19), _printed(27, 31))  # TP 16/19, TN 27/31: 86.00
        + _binary_row(300, 91.40, 84.21, 87.10)  # above both rates
        + _binary_row(400, 60.00, 84.21, 61.29)  # below both rates
    )
    verdicts = {(f.row, f.verdict) for f in audit.binary_between(paper)}
    assert verdicts == {("200", "ok"), ("300", "impossible"), ("400", "impossible")}
    sizes = {f.row: f.verdict for f in audit.class_sizes(paper, total=50) if f.column == "Distilled/accuracy"}
    assert sizes == {"200": "ok", "300": "impossible", "400": "impossible"}


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
    texts = sorted(PAPER_TEXT.glob("*.txt"))
    if not texts:
        pytest.skip("paper text not present")
    paper = " ".join(texts[0].read_text(encoding="utf-8").split())
    missing = [c.quote for c in audit.CLAIMS if " ".join(c.quote.split()) not in paper]
    assert missing == []


def test_write_audit_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md, csv = audit.write_audit(tmp_path / "out")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["rule", "table", "row", "column", "printed", "verdict", "explanation"]
    report = md.read_text(encoding="utf-8")
    assert all(f"## {rule}" in report for rule in audit.RULES)
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
