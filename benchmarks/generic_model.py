"""A model of one's own through torch.func against the built-in stacked MLP, on real MNIST.

    NEURALFORGE_DATA=/path/to/data flock /tmp/nf-heavy.lock \
        python benchmarks/generic_model.py [--epochs 2] [--singles 4] [overrides, e.g. threads=1]

The module is the notebook's MLP (784-128-64-10, ReLU) as a plain nn.Sequential written in
a YAML file outside conf/ (found through hydra.searchpath), trained by the generic path
(neuralforge.functional). In one process, it trains
- the built-in stacked MLP as one group of K = 32 seeds,
- the nn.Sequential through the generic path as one group of K = 32 seeds,
- the nn.Sequential as `--singles` single runs (n_seeds=1), each its own run: the cost per
  model-epoch of 32 single runs, without training all 32;
and prints seconds per model-epoch of training (the mean over epochs after the first, which
also pays one-off costs) with the ratios, then the test accuracy of the two groups of 32
compared by the tests tests/test_seeds.py uses (Mann-Whitney U, two-sample KS).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from notebook import configure, data_root, harness_config, machine
from scipy import stats

from neuralforge.engine import Listener, train
from neuralforge.record.schema import read_results
from neuralforge.runfolder import member_folders

K = 32
SEQUENTIAL = """\
# the notebook's MLP, as a user would write it: torch.nn's layers, nothing of NeuralForge's
_target_: torch.nn.Sequential
_args_:
  - {_target_: torch.nn.Flatten}
  - {_target_: torch.nn.Linear, in_features: 784, out_features: 128}
  - {_target_: torch.nn.ReLU}
  - {_target_: torch.nn.Linear, in_features: 128, out_features: 64}
  - {_target_: torch.nn.ReLU}
  - {_target_: torch.nn.Linear, in_features: 64, out_features: 10}
"""


def train_group(root: str, conf: Path, folder: Path, *overrides: str) -> tuple[list[float], list[float], int]:
    """Train one run folder; return the seconds of each training epoch, each member's test
    accuracy, and the threads it ran on."""
    cfg = harness_config(root, f"hydra.searchpath=[file://{conf}]", *overrides)
    seconds: list[float] = []
    threads: list[int] = []

    class Timed(Listener):  # the loop's own epochs, timed without the evaluation after each
        def epoch_done(self, training, outcome) -> bool:
            seconds.append(outcome.seconds)
            threads[:] = [training.spec["threads"]]
            self.spec = training.spec
            return False

    timed = Timed()
    train(cfg, folder, listeners=[timed])
    return seconds, [read_results(f).metrics.test_acc for f in member_folders(folder, timed.spec)], threads[0]


def per_epoch(seconds: list[float]) -> float:
    return float(np.mean(seconds[1:] if len(seconds) > 1 else seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--singles", type=int, default=4, help="single runs timed (seeds 0..N-1)")
    parser.add_argument("overrides", nargs="*", help="more config overrides, for all runs")
    args = parser.parse_args()
    root = data_root()
    configure()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "conf"
        (conf / "model").mkdir(parents=True)
        (conf / "model" / "sequential.yaml").write_text(SEQUENTIAL)
        common = (f"trainer.epochs={args.epochs}", "seed=0", *args.overrides)
        built_s, built_acc, threads = train_group(root, conf, Path(tmp) / "builtin", "model=mlp", f"n_seeds={K}",
                                                  *common)
        gen_s, gen_acc, _ = train_group(root, conf, Path(tmp) / "generic", "model=sequential", f"n_seeds={K}", *common)
        single_s = [per_epoch(train_group(root, conf, Path(tmp) / f"single{s}", "model=sequential", "n_seeds=1",
                                          f"trainer.epochs={args.epochs}", f"seed={s}", *args.overrides)[0])
                    for s in range(args.singles)]
    built, generic, single = per_epoch(built_s) / K, per_epoch(gen_s) / K, float(np.mean(single_s))
    print(f"cpu: {machine()}, threads per run: {threads}, MNIST, {args.epochs} epochs, batch 64, Adam 1e-3")
    print("| path | runs | s/epoch | s/model-epoch | generic K=32 vs this |")
    print("|---|---|---|---|---|")
    print(f"| built-in stacked MLP, K=32 | 1 | {built * K:.2f} | {built:.4f} | {generic / built:.2f}x the cost |")
    print(f"| nn.Sequential, generic path, K=32 | 1 | {generic * K:.2f} | {generic:.4f} | 1 |")
    print(f"| nn.Sequential, single runs | {args.singles} timed | {single:.2f} | {single:.4f} | "
          f"{single / generic:.1f}x faster |")
    print(f"goal: generic <= 1.5x built-in per model-epoch: {generic / built:.2f}x "
          f"({'met' if generic / built <= 1.5 else 'MISSED'}); generic >= 2x faster than single runs: "
          f"{single / generic:.1f}x ({'met' if single / generic >= 2 else 'MISSED'})")
    print(f"test accuracy after {args.epochs} epochs, 32 seeds each: built-in {np.mean(built_acc):.4f} "
          f"± {np.std(built_acc, ddof=1):.4f}, generic {np.mean(gen_acc):.4f} ± {np.std(gen_acc, ddof=1):.4f}")
    print(f"same distribution? Mann-Whitney U p = {stats.mannwhitneyu(gen_acc, built_acc).pvalue:.3f}, "
          f"KS p = {stats.ks_2samp(gen_acc, built_acc).pvalue:.3f} (p > 0.05: no difference found)")
