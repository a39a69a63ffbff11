"""The GPU check: what a GPU does for the harness, in one table, in under five minutes.

    NEURALFORGE_DATA=/path/to/data python benchmarks/gpu_check.py                 # on one GPU
    python benchmarks/gpu_check.py --device cpu --small --data ROOT               # its CPU rehearsal

Rows, each a `python run.py` of its own, as a user launches it:
  1. the notebook's MLP alone: seconds per epoch and its test accuracy;
  2. a group of 32 seeds, and one of 1,000 seeds for 10 epochs, in one process each (the goal
     for 1,000: at most 60 s on one H100 or H200);
  3. a run SIGKILLed in the middle and relaunched, against the same run uninterrupted: the
     same records and the same predictions, bit for bit, on the same device;
  4. the CNN preset (+experiment=cnn_fast): its time to 99.4% test accuracy (the test set is
     recorded each epoch, never chosen on; this is a speed figure, as airbench's time to 94%);
  and the device's name, the torch version, and whether cuDNN stayed deterministic (what the
  run's own record says).

--small shrinks every size (2 epochs, groups of 4 and 8) so that the CPU rehearsal, which a
test runs on the synthetic dataset, takes seconds. It exits 1 when the resume is not
bit-identical or a run fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from neuralforge import hardware
from neuralforge.record.files import HISTORY, PREDICTIONS
from neuralforge.record.schema import Record, read_results

ROOT = Path(__file__).resolve().parent.parent
CNN_TARGET = 0.994


def launch(out: Path, args: list[str], common: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess]:
    """run.py with `args` into `out`; (wall seconds, the finished process)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "run.py", *common, *args, f"hydra.run.dir={out}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"gpu_check: run.py {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done


def killed_and_resumed(out: Path, args: list[str], common: list[str], at_epoch: int, timeout: float) -> None:
    """The run SIGKILLed once `at_epoch` epochs are in its history, then launched again."""
    command = [sys.executable, "run.py", *common, *args, f"hydra.run.dir={out}"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / HISTORY
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if history.exists() and len(history.read_text().splitlines()) - 1 >= at_epoch:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        raise SystemExit(f"gpu_check: the run to kill ended before epoch {at_epoch}: give more epochs")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    launch(out, args, common, timeout)


def record(folder: Path) -> Record:
    rec = read_results(folder)
    if rec is None:
        raise SystemExit(f"gpu_check: {folder} holds no record")
    return rec


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def seconds_to(folder: Path, target: float) -> tuple[float | None, int | None]:
    """Training seconds until the first epoch whose test accuracy reached `target`, and that epoch."""
    rows = [line.split(",") for line in (folder / HISTORY).read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    epoch, acc, secs = header.index("epoch"), header.index("test_acc"), header.index("seconds")
    spent = 0.0
    for row in rows:
        spent += float(row[secs])
        if float(row[acc]) >= target:
            return spent, int(row[epoch])
    return None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="the CPU rehearsal's sizes")
    parser.add_argument("--data", default=os.environ.get("NEURALFORGE_DATA"),
                        help="the folder that holds MNIST/raw (default: $NEURALFORGE_DATA)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds any one run may take")
    args = parser.parse_args()
    if not args.data:
        parser.error("give --data or set NEURALFORGE_DATA to the folder that holds MNIST/raw")
    device = hardware.resolve_device(args.device)
    small = args.small
    epochs, k_small, k_large, large_epochs = (2, 4, 8, 2) if small else (5, 32, 1000, 10)
    common = [f"data.root={args.data}", f"device={args.device}", "data.download=false"]
    if small:
        common += ["data.val_size=100", "trainer.eval_batch_size=256"]
    out = args.out or Path(tempfile.mkdtemp(prefix="nf-gpu-check-"))
    rows: list[tuple[str, str]] = []
    ok = True

    # 1. the notebook's MLP alone
    launch(out / "single", ["model.hidden=[128,64]", f"trainer.epochs={epochs}"], common, args.timeout)
    single = record(out / "single")
    rows.append(("notebook MLP, 1 run", f"{single.timing.seconds_per_epoch:.2f} s/epoch, "
                 f"test acc {100 * (single.metrics.test_acc or 0):.2f}% after {epochs} epochs"))
    # 2. groups
    for k, e in ((k_small, epochs), (k_large, large_epochs)):
        wall, _ = launch(out / f"group{k}", [f"n_seeds={k}", f"trainer.epochs={e}"], common, args.timeout)
        first = record(out / f"group{k}" / "seed=0")
        rows.append((f"group of {k} seeds, {e} epochs", f"{wall:.1f} s end to end, "
                     f"{first.timing.seconds_per_epoch:.2f} s/epoch for the group"))
    # 3. SIGKILL and resume
    run_args = ["model.hidden=[128,64]", f"trainer.epochs={2 * epochs + 2}"]
    launch(out / "straight", run_args, common, args.timeout)
    killed_and_resumed(out / "resumed", run_args, common, epochs, args.timeout)
    a, b = record(out / "straight"), record(out / "resumed")
    same = a.metrics == b.metrics and sha256(out / "straight" / PREDICTIONS) == sha256(out / "resumed" / PREDICTIONS)
    ok &= same
    rows.append((f"SIGKILL at epoch {epochs} of {2 * epochs + 2}, relaunched",
                 "bit-identical to the uninterrupted run" if same else "DIFFERS from the uninterrupted run"))
    # 4. the CNN preset
    tiny_cnn = ["trainer.epochs=2", "trainer.batch_size=64", "model.channels=[4,8]"]  # one_cycle needs steps
    cnn_args = ["+experiment=cnn_fast", *(tiny_cnn if small else [])]
    wall, _ = launch(out / "cnn", cnn_args, common, args.timeout)
    cnn = record(out / "cnn")
    seconds, epoch = seconds_to(out / "cnn", CNN_TARGET)
    best = 100 * (cnn.metrics.max_test_acc or 0)
    reached = (f"{seconds:.1f} s of training to {100 * CNN_TARGET:.1f}% (epoch {epoch})" if seconds is not None
               else f"did not reach {100 * CNN_TARGET:.1f}% (best test acc {best:.2f}%)")
    rows.append(("CNN preset (+experiment=cnn_fast)", f"{reached}; {wall:.1f} s end to end"))
    deterministic = {record(f).provenance.get("cudnn_deterministic") for f in (out / "single", out / "cnn")}
    rows.append(("device", hardware.device_name(device)))
    rows.append(("torch", torch.__version__))
    rows.append(("cudnn.deterministic held", "yes" if deterministic == {True} else
                 "not applicable (no CUDA)" if deterministic == {None} else "NO"))

    width = max(len(name) for name, _ in rows)
    print(f"| {'check'.ljust(width)} | result |\n|{'-' * (width + 2)}|--------|")
    for name, result in rows:
        print(f"| {name.ljust(width)} | {result} |")
    print(f"runs in {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
