"""Side-by-side benchmarks of raydistill's fast paths; run them with `python benchmarks/run.py`."""
