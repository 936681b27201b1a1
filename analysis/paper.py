"""The paper's published numbers (``paper_numbers.csv``, transcribed once) behind a small typed API.

Values are percentages as printed (``decimals``: the digits printed after the point). ``ipc`` is
empty for full-training-set rows, ``epochs`` is empty where the paper prints "NA", ``model`` is
empty where the paper does not name one (Table 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

CSV_PATH = Path(__file__).with_name("paper_numbers.csv")
INT_COLUMNS = ("table", "ipc", "epochs")


@dataclass(frozen=True)
class PaperNumbers:
    """The transcribed tables as one long frame with typed columns."""

    frame: pd.DataFrame

    def rows(self, **equal: object) -> pd.DataFrame:
        """Rows whose columns equal the given values (``None`` matches an empty cell)."""
        mask = pd.Series(True, index=self.frame.index)
        for column, value in equal.items():
            col = self.frame[column]
            mask &= col.isna() if value is None else col.eq(value).fillna(False).astype(bool)
        return self.frame[mask]

    def value(
        self,
        *,
        table: int,
        dataset: str,
        method: str,
        ipc: int | None,
        epochs: int | None,
        model: str = "",
        metric: str = "accuracy",
    ) -> float | None:
        """The single printed value for these keys, or ``None`` if the paper has none."""
        hit = self.rows(table=table, dataset=dataset, model=model, method=method, ipc=ipc, epochs=epochs, metric=metric)
        if len(hit) > 1:
            raise ValueError(f"ambiguous paper lookup: {len(hit)} rows")
        return None if hit.empty else float(hit["value"].iloc[0])

    def table_accuracy(self, dataset: str, model: str, method: str, ipc: object, epochs: int) -> float | None:
        """The printed accuracy of a Tables 1-3 cell: the full training set (Table 3) or the
        paper's method at ``ipc`` (the first of Tables 1, 2, 3 that prints it), else ``None``."""
        if method == "full":
            return self.value(table=3, dataset=dataset, model=model, method="full", ipc=None, epochs=epochs)
        values = (self.value(table=t, dataset=dataset, model=model, method="kmeans", ipc=int(ipc), epochs=epochs)
                  for t in (1, 2, 3))
        return next((v for v in values if v is not None), None)


def load_paper(path: Path = CSV_PATH) -> PaperNumbers:
    """Read the CSV: integer keys as nullable ``Int64``, ``value`` as float (its printed ``decimals``
    beside it), text columns as str."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].replace("", None)).astype("Int64")
    frame["decimals"] = frame["value"].str.partition(".")[2].str.len()
    frame["value"] = frame["value"].astype(float)
    return PaperNumbers(frame)
