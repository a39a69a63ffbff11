"""Experiment trackers (MLflow, TensorBoard, W&B): a run's records shown where its users look,
live from inside the run (`logger=mlflow`, trackers.live) or after the fact
(`python -m analysis export`), through one writer per tracker (base.Writer)."""
