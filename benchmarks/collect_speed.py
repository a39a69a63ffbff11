"""How long analysis.collect takes on 1,000 run folders (the budget is 2 s).

Writes a synthetic sweep in a temporary folder, laid out as the trainer lays it out: one job
folder per config (20 widths x learning rates), each a group of 50 seed members with
results.json, history.csv, predictions.npy and the job's .hydra/overrides.yaml, then times
collect on it.

    python benchmarks/collect_speed.py [--runs 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import collect
from neuralforge.record.files import HISTORY, PREDICTIONS, RESULTS

WIDTHS = ["[64]", "[128]", "[256]", "[128, 64]", "[256, 128]"]
LRS = [3e-4, 1e-3, 3e-3, 1e-2]
SEEDS = ("init", "order", "split", "augment", "dropout")
EPOCHS, N_TEST = 10, 10_000


def config(hidden: str, lr: float, seed: int, n_seeds: int) -> dict:
    return {
        "data": {"name": "mnist", "root": "/data", "download": False, "val_size": 5000, "mean": 0.1307,
                 "std": 0.3081, "augment": {"shift": 0}},
        "model": {"_target_": "neuralforge.models.MLP", "hidden": json.loads(hidden), "activation": "relu",
                  "dropout": 0.0},
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": lr, "betas": [0.9, 0.999],
                      "weight_decay": 0.0, "fused": True},
        "scheduler": {"_target_": "neuralforge.schedules.constant", "_partial_": True},
        "trainer": {"epochs": EPOCHS, "batch_size": 64, "eval_batch_size": 1000, "patience": None,
                    "label_smoothing": 0.0, "keep_last": True, "init_from": None},
        "seed": seed, "seeds": {s: seed for s in SEEDS}, "n_seeds": n_seeds, "seeds_per_trial": None,
        "device": "cpu", "threads": 1,
    }


def write_run(folder: Path, hidden: str, lr: float, member: int, n_seeds: int, overrides: list[str],
              rng: np.random.Generator) -> None:
    seed = member
    folder.mkdir(parents=True)
    curve = np.clip(0.9 + 0.08 * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 3)) + rng.normal(0, 0.003, EPOCHS), 0, 1)
    best = int(np.argmax(curve)) + 1
    rows = [{"epoch": e, "train_loss": 0.3 / e, "train_acc": float(curve[e - 1]), "val_loss": 0.3 / e,
             "val_acc": float(curve[e - 1]), "test_loss": 0.3 / e, "test_acc": float(curve[e - 1] - 0.002),
             "lr": lr, "seconds": 2.0} for e in range(1, EPOCHS + 1)]
    b = rows[best - 1]
    record = {
        "schema_version": 1, "status": "complete", "error": None,
        "metrics": {"best_epoch": best, "epochs_run": EPOCHS, "selection": "val_acc",
                    **{k: b[k] for k in ("val_acc", "val_loss", "test_acc", "test_loss", "train_acc", "train_loss")},
                    "last_test_acc": rows[-1]["test_acc"], "max_test_acc": max(r["test_acc"] for r in rows)},
        "seed": seed, "seeds": {s: seed for s in SEEDS}, "config": config(hidden, lr, seed, n_seeds),
        "fingerprint": f"{WIDTHS.index(hidden):08x}{LRS.index(lr):08x}", "overrides": overrides,
        "group": {"size": n_seeds, "member": member, "folder": str(folder.parent)}, "n_params": 109386,
        "timing": {"started": 1.7e9, "heartbeat": 1.7e9 + 20, "wall_seconds": 20.0, "seconds_per_epoch": 2.0},
        "provenance": {"python": "3.11.7", "torch": "2.14.1", "host": "node1", "pid": 4242,
                       "dataset_sha256": {"t10k-labels-idx1-ubyte": "0" * 64}},
    }
    (folder / RESULTS).write_text(json.dumps(record, indent=2))
    header = ",".join(rows[0])
    (folder / HISTORY).write_text("\n".join([header, *(",".join(map(repr, r.values())) for r in rows)]) + "\n")
    np.save(folder / PREDICTIONS, rng.integers(0, 10, N_TEST, dtype=np.uint8))


def write_sweep(root: Path, n_runs: int) -> None:
    rng = np.random.default_rng(0)
    configs = [(h, lr) for h in WIDTHS for lr in LRS]
    per_config = -(-n_runs // len(configs))
    written = 0
    for hidden, lr in configs:
        overrides = [f"model.hidden={hidden.replace(' ', '')}", f"optimizer.lr={lr}", f"n_seeds={per_config}", "seed=0"]
        job = root / ",".join(overrides)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        for member in range(min(per_config, n_runs - written)):
            write_run(job / f"seed={member}", hidden, lr, member, per_config, overrides, rng)
            written += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_sweep(Path(tmp), args.runs)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            df = collect(tmp)
            times.append(time.perf_counter() - start)
        assert len(df) == args.runs and (df["status"] == "complete").all()
        print(f"collect: {len(df)} runs in {min(times):.3f} s (best of {args.repeat}; "
              f"first {times[0]:.3f} s; budget 2 s)")


if __name__ == "__main__":
    main()
