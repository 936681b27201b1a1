"""The sweep layer: grid cells as Ray Tune trials, logged to MLflow, with teachers trained once."""
