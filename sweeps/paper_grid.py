"""The paper's grid as Ray Tune trials logged to MLflow (Tables 1-3 and 5 of the paper).

    python sweeps/paper_grid.py --smoke --data-root DIR          # a few minutes on a 2-core CPU
    python sweeps/paper_grid.py --data-root DIR --table3 --ocid PATH/TO/OCID
Running the same command again resumes the sweep: finished cells are kept, the rest run.
"""

from raydistill.tune.grid import Grid, run_sweep, sweep_parser

DATASETS = ["mnist", "fashion-mnist", "cifar10"]
MODELS = ["baseline", "resnet34", "lenet"]
EPOCHS = [200, 300, 400, 500, 600]

TABLES_1_2 = {"dataset": DATASETS, "model": MODELS, "epochs": EPOCHS, "ipc": [10, 50]}
TABLE_3 = [{"dataset": DATASETS, "model": ["baseline"], "epochs": [10, 20, 200], "method": ["full"]},
           {"dataset": DATASETS, "model": ["baseline"], "epochs": [10, 20, 200], "ipc": [10]}]


def table_5(ocid: str) -> list[dict]:
    """OCID (a class-per-folder set with normal/ and cancer/), ResNet-34, 10 per class vs full."""
    return [{"dataset": [f"folder:{ocid}"], "model": ["resnet34"], "epochs": EPOCHS, "ipc": [10],
             "method": ["kmeans", "full"], "positive_class": ["cancer"], "resize": [224]}]


SMOKE = Grid("smoke", fixed={"train_limit": 2000}, parts=[
    {"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [1, 3], "ipc": [1, 10]},
    {"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [3], "method": ["full"]},
])


def main() -> int:
    parser = sweep_parser(__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny real grid: Fashion-MNIST, 2,000 training images")
    parser.add_argument("--table3", action="store_true", help="add Table 3: full training set vs 10 per class")
    parser.add_argument("--ocid", default=None, help="add Table 5: path of the OCID folder set")
    parser.add_argument("--no-tables", action="store_true", help="skip writing the analysis tables at the end")
    args = parser.parse_args()
    if args.smoke:
        grid = SMOKE
    else:
        parts = [TABLES_1_2] + (TABLE_3 if args.table3 else []) + (table_5(args.ocid) if args.ocid else [])
        grid = Grid("paper-grid", parts)
    code = run_sweep(grid, args)
    if code == 0 and not args.dry_run and not args.no_tables:
        from analysis.tables import main as write_tables
        from raydistill.tracking import local_store

        out = args.results / "tables" / (args.name or grid.name)
        uri = args.tracking_uri or local_store(args.results)
        paths = write_tables(["--experiment", args.name or grid.name, "--out", str(out), "--tracking-uri", uri])
        print(f"tables and plots: {out} ({len(paths)} files)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
