"""What the gradient shift and K-means really add: selection methods x datasets x ipc x seeds,
scored under the paper's protocol and the field's (ConvNet-3, SGD, several inits).

    python sweeps/ablation.py --smoke --data-root DIR --seeds 0 1 2     # CPU, real Fashion-MNIST
    python sweeps/ablation.py --data-root DIR --seeds 0 1 2             # GPU cluster
"""

from raydistill.tune.grid import Grid

NAME = "ablation"
SELECTIONS = [
    {"method": ["random", "kmeans-nearest", "herding", "kcenter", "dm"], "modifier": ["none"]},
    {"method": ["kmeans"], "modifier": ["none", "grad-l1", "input-grad"]},  # grad-l1 = the paper's method
]
PROTOCOLS = [{"protocol": ["paper"], "epochs": [200]},
             {"protocol": ["dc"], "teacher_epochs": [200], "student_epochs": [300]}]


def build(name: str, datasets: list[str], ipcs: list[int], protocols: list[dict], fixed: dict) -> Grid:
    common = {"dataset": datasets, "model": ["baseline"]}
    parts = [{**common, **sel, **proto, "ipc": ipcs} for sel in SELECTIONS for proto in protocols]
    parts += [{**common, **proto, "method": ["full"]} for proto in protocols]
    return Grid(name, parts, fixed)


ABLATION = build("ablation", ["mnist", "fashion-mnist", "cifar10"], [1, 10, 50], PROTOCOLS, {})
SMOKE = build("ablation-smoke", ["fashion-mnist"], [1, 10],
              [{"protocol": ["paper"], "epochs": [3]}, {"protocol": ["dc"], "teacher_epochs": [3], "student_epochs": [30]}],
              {"train_limit": 2000, "eval_runs": 1, "dm_iterations": 10})


def add_arguments(parser) -> None:
    parser.add_argument("--smoke", action="store_true", help="CPU preset: Fashion-MNIST, 2,000 training images, "
                        "short runs")


def grid(args) -> Grid:
    return SMOKE if args.smoke else ABLATION


if __name__ == "__main__":
    import sys

    from raydistill.cli import main

    raise SystemExit(main(["sweep", NAME, *sys.argv[1:]]))
