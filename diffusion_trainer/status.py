"""Status: the runs in a runs folder, their last epoch, loss and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path


def runs(runs_dir="runs") -> list[dict]:
    """One row per run folder (a folder with config.yaml), newest activity first."""
    rows = []
    root = Path(runs_dir)
    for run in sorted(p for p in root.glob("*") if (p / "config.yaml").is_file()):
        history = []
        if (run / "history.json").is_file():
            try:
                history = json.loads((run / "history.json").read_text())
            except json.JSONDecodeError:
                history = []
        ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
        last = history[-1] if history else {}
        rows.append({"run": run.name, "epoch": last.get("epoch", 0), "step": last.get("step", 0),
                     "loss": last.get("loss"), "checkpoints": len(ckpts),
                     "latest": max(ckpts, key=lambda p: p.stat().st_mtime).name if ckpts else "-",
                     "mtime": max([p.stat().st_mtime for p in ckpts] or [0])})
    return sorted(rows, key=lambda r: -r["mtime"])


def table(runs_dir="runs") -> str:
    rows = runs(runs_dir)
    if not rows:
        return f"no runs in {runs_dir} (a run is a folder with config.yaml)"
    lines = [f"{'run':<28} {'epoch':>6} {'step':>8} {'loss':>9} {'ckpts':>5}  latest checkpoint"]
    for r in rows:
        loss = f"{r['loss']:.4g}" if r["loss"] is not None else "-"
        lines.append(f"{r['run']:<28} {r['epoch']:>6} {r['step']:>8} {loss:>9} "
                     f"{r['checkpoints']:>5}  {r['latest']}")
    return "\n".join(lines)
