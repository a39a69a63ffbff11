"""Optuna searches, in one place: the sweeper (`hydra/sweeper=nf_optuna`, sweeper.py), its
search space (space.py), the job's side of a trial (trial.py), the noise-aware pruner
(pruners.py) and the configs registered for Hydra (configs.py)."""
