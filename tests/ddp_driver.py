"""Two-process DDP run of the diffusion trainer that records, per rank and optimizer step, the
indices of the batch it trained on, its loss and a hash of the weights after the step.

Run by tests/test_trainer.py::test_ddp_two_processes as
``python tests/ddp_driver.py RUNS_DIR OUT_DIR``; Lightning's launcher starts rank 1 by running
the same command again with LOCAL_RANK=1 in its environment.
"""

import hashlib
import json
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from diffusion_trainer.config import TrainConfig, defaults  # noqa: E402
from diffusion_trainer.run import train  # noqa: E402


def weights_hash(module) -> str:
    h = hashlib.sha256()
    for p in module.model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class Recorder(L.Callback):
    def __init__(self, out: Path):
        self.out, self.rows = out, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append({"step": trainer.global_step, "indices": batch[2].tolist(),
                          "loss": float(outputs["loss"]), "weights": weights_hash(module)})

    def on_train_end(self, trainer, module):
        self.out.mkdir(parents=True, exist_ok=True)
        rank = trainer.global_rank
        (self.out / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "world_size": trainer.world_size, "rows": self.rows,
             "backend": torch.distributed.get_backend() if torch.distributed.is_initialized()
             else None}))


if __name__ == "__main__":
    runs, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = TrainConfig.from_dict(
        {"name": "ddp", "runs_dir": str(runs), "per_class": 4, "batch_size": 4, "epochs": 1,
         "max_steps": 3, "sample_every_epochs": 0, "accelerator": "cpu", "devices": "2",
         "strategy": "ddp", "data_source": "offline"}, defaults("quicktest", "mnist"))
    train(cfg, callbacks=[Recorder(out)])
