"""The widths race against the reference: does `hydra/sweeper=nf_race` reach the decision that
32 seeds per width give, for at most 40% of their runs?

    python benchmarks/race_widths.py                 # real MNIST (NEURALFORGE_DATA), 3 widths
    python benchmarks/race_widths.py --out /tmp/rw --ref-seeds 16 \
        --extra data.root=/tmp/idx data.val_size=100 trainer.epochs=2 threads=1 device=cpu data.download=false \
        --race-args hydra.sweeper.initial=4 hydra.sweeper.step=2      # small, on a synthetic IDX folder

Trains (or finds, complete runs are skipped) the reference, `+experiment=widths n_seeds=32`
(seeds 0..31), and races the same widths on fresh seeds (from --race-seed, default 1000) with
hydra.sweeper.max_runs = 40% of the reference's runs. The decision compared: the configs the race
eliminated against those the reference's `compare` verdicts call worse than another ("a better"
or "b better"). Prints both, the runs each spent, and the CPU.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import collect, racing, tables  # noqa: E402
from analysis.groups import show  # noqa: E402
from benchmarks.race_seeds_needed import cpu  # noqa: E402

KEY = "model.hidden"


def train(*args: str) -> None:
    subprocess.run([sys.executable, "run.py", "-m", "+experiment=widths", *args], cwd=ROOT, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="multirun/race_widths", help="folder of the reference and the race")
    p.add_argument("--ref-seeds", type=int, default=32)
    p.add_argument("--race-seed", type=int, default=1000, help="the race's first seed")
    p.add_argument("--max-runs", type=int, help="the race's budget (default: 40%% of the reference's runs)")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for both (e.g. the data folder)")
    p.add_argument("--race-args", nargs="*", default=[], help="more overrides for the race (hydra.sweeper.step=2)")
    args = p.parse_args()
    out = Path(args.out)
    train(f"n_seeds={args.ref_seeds}", f"hydra.sweep.dir={out / 'reference'}", *args.extra)
    reference = collect(out / "reference")
    n_ref = int((reference["status"] == "complete").sum())
    budget = args.max_runs or math.floor(0.4 * n_ref)
    train("hydra/sweeper=nf_race", f"hydra.sweeper.max_runs={budget}", f"seed={args.race_seed}",
          f"hydra.sweep.dir={out / 'race'}", *args.extra, *args.race_args)

    pairs = tables.compare(reference, by=KEY)
    worse = {row["b"] if row["verdict"] == "a better" else row["a"] for _, row in pairs.iterrows()
             if row["verdict"] in ("a better", "b better")}
    _, _, race = racing.read(out / "race")
    # the race names a config by its override (model.hidden=[64,32]); compare by its value
    eliminated = {c.split("=", 1)[1].replace(" ", "") for c, s in race.standings.items()
                  if s.status == racing.ELIMINATED}
    worse = {show(w).replace(" ", "") for w in worse}
    print(f"\nCPU: {cpu()}")
    print(tables.compact(pairs).to_string(index=False))
    print(f"reference: {n_ref} runs; worse than another by its verdicts: {sorted(worse) or 'none'}")
    print(f"race: {race.runs} runs ({100 * race.runs / n_ref:.0f}% of the reference's), {race.ended}; "
          f"eliminated: {sorted(eliminated) or 'none'}")
    print(f"same decision: {'yes' if eliminated == worse else 'no'}")


if __name__ == "__main__":
    main()
