"""Declarative grids. Each module defines NAME, add_arguments(parser) for its presets and
grid(args) -> Grid; `raydistill sweep NAME` and `python sweeps/MODULE.py` run it."""
