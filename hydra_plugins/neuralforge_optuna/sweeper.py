"""The registration of `hydra/sweeper=nf_optuna` and its pruners; the sweeper itself is
neuralforge.search.sweeper. The package's `hydra.plugins` entry point names this module."""

from hydra.core.config_store import ConfigStore

# hydra-optuna-sweeper's public config module: registers the sampler configs (hydra/sweeper/sampler=tpe, ...)
import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401
from neuralforge.search.configs import PRUNERS, NFOptunaSweeperConf
from neuralforge.search.sweeper import NFOptunaSweeper

__all__ = ["NFOptunaSweeper"]

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="nf_optuna", node=NFOptunaSweeperConf, provider="neuralforge")
for name, node in PRUNERS.items():
    cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="neuralforge")
