"""The plugin `hydra/sweeper=nf_optuna`, which the package's `hydra.plugins` entry point names: the
sweeper is neuralforge.search.sweeper's, and importing it registers its configs
(neuralforge.search.configs)."""

from neuralforge.search.sweeper import NFOptunaSweeper

__all__ = ["NFOptunaSweeper"]
