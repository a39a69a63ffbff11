"""The plugin `hydra/sweeper=nf_race`, which the package's `hydra.plugins` entry point names: the
sweeper, and the registration of its config, are neuralforge.race's."""

from neuralforge.race import NFRaceSweeper

__all__ = ["NFRaceSweeper"]
