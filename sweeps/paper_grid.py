"""The paper's grid (Tables 1-5) as Ray Tune trials logged to MLflow.

    python sweeps/paper_grid.py --smoke --data-root DIR     # a small real grid, minutes on 2 CPU cores
    python sweeps/paper_grid.py --data-root DIR --table3 --table4 --ocid PATH/TO/OCID
Running the same command again continues the sweep: finished cells are kept, the rest run.
"""

from raydistill.tune.grid import Grid

NAME = "paper-grid"
DATASETS = ["mnist", "fashion-mnist", "cifar10"]
MODELS = ["baseline", "resnet34", "lenet"]
EPOCHS = [200, 300, 400, 500, 600]

TABLES_1_2 = {"dataset": DATASETS, "model": MODELS, "epochs": EPOCHS, "ipc": [10, 50]}
TABLE_4 = {"dataset": DATASETS, "model": MODELS, "epochs": [1000], "ipc": [10, 50]}
TABLE_3 = [{"dataset": DATASETS, "model": ["baseline"], "epochs": [10, 20, 200], "method": ["full"]},
           {"dataset": DATASETS, "model": ["baseline"], "epochs": [10, 20, 200], "ipc": [10]}]
SMOKE = Grid("smoke", fixed={"train_limit": 2000}, parts=[
    {"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [1, 3], "ipc": [1, 10]},
    {"dataset": ["fashion-mnist"], "model": ["baseline"], "epochs": [3], "method": ["full"]},
])


def table_5(ocid: str) -> list[dict]:
    """OCID (a class-per-folder set with normal/ and cancer/), ResNet-34, 10 per class vs full."""
    return [{"dataset": [f"folder:{ocid}"], "model": ["resnet34"], "epochs": EPOCHS, "ipc": [10],
             "method": ["kmeans", "full"], "positive_class": ["cancer"], "resize": [224]}]


def add_arguments(parser) -> None:
    parser.add_argument("--smoke", action="store_true", help="a small real grid: Fashion-MNIST, 2,000 training images, "
                        "epochs 1 and 3, ipc 1 and 10, plus one full-data cell")
    parser.add_argument("--table3", action="store_true", help="add Table 3: full training set vs 10 per class")
    parser.add_argument("--table4", action="store_true", help="add Table 4's 1000-epoch cells")
    parser.add_argument("--ocid", default=None, help="add Table 5: path of the OCID folder set")


def grid(args) -> Grid:
    if args.smoke:
        return SMOKE
    parts = ([TABLES_1_2] + (TABLE_3 if args.table3 else []) + ([TABLE_4] if args.table4 else [])
             + (table_5(args.ocid) if args.ocid else []))
    return Grid("paper-grid", parts)


if __name__ == "__main__":
    import sys

    from raydistill.cli import main

    raise SystemExit(main(["sweep", NAME, *sys.argv[1:]]))
