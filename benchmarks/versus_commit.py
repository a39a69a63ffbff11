"""The training loop against the one at an earlier commit, in one process, epochs alternating.

    NEURALFORGE_DATA=$PWD/../shared/data python benchmarks/versus_commit.py REV [override ...] [--epochs N]

Only `neuralforge/engine.py` is taken from REV; every other module is the working tree's. Both
runs are set up from the same config before any epoch is timed, and their epochs alternate
(old first, then new first), so that the machine's drift falls on both alike.
"""

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from notebook import REPO, configure, data_root, harness_config, machine


def engine_at(rev: str, folder: str):
    source = subprocess.run(["git", "show", f"{rev}:neuralforge/engine.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = Path(folder) / "engine_at_rev.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("engine_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("rev")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    from neuralforge import engine

    print(f"threads: {configure()}, cpu: {machine()}")
    cfg = harness_config(data_root(), *args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name, module in ((args.rev, engine_at(args.rev, tmp)), ("working tree", engine)):
            runs[name] = module.Training(cfg, *module.settle(cfg))
        seconds = {name: [] for name in runs}
        for i in range(args.epochs):
            for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
                tick = time.perf_counter()
                runs[name].train_epoch()
                seconds[name].append(time.perf_counter() - tick)
    print("| engine | epochs (s) | mean after the first |")
    print("|---|---|---|")
    means = {}
    for name, s in seconds.items():
        means[name] = statistics.mean(s[1:])
        print(f"| {name} | {' '.join(f'{x:.2f}' for x in s)} | {means[name]:.3f} |")
    old, new = means.values()
    print(f"speed-up of the working tree: {old / new:.2f}x")
