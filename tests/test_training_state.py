"""Seeds under DDP: every rank of a seeded run draws its own cases and augmentations.

nnU-Net builds the same trainer on every DDP rank (``nnunetv2/run/run_training.py``,
``run_ddp``). Two real processes join a gloo process group here and build a package
trainer as nnU-Net does under DDP (``dist.is_initialized()`` is what nnU-Net's trainer
checks); each reports the seeds it applied.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import SMALL_PLANS

pytestmark = pytest.mark.nnunet

RANK_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import numpy as np
    import torch
    from torch import distributed as dist
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunet_losses.nnunet.preflight import find_trainer_class

    store, rank, folder, plans_name, output = sys.argv[1:6]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=int(rank), world_size=2)
    plans = load_json(f"{folder}/{plans_name}.json")
    plans["continue_training"] = False
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = find_trainer_class("nnUNetTrainerRRW")(plans, "2d", 0, load_json(f"{folder}/dataset.json"), torch.device("cpu"))
    init = torch.initial_seed()
    trainer.bookkeeping.seed_sample_stream(trainer)
    record = {"rank": trainer.local_rank, "init": init, "sample_seeds": trainer.bookkeeping.sample_seeds, "first_draw": int(np.random.randint(2**31))}
    with open(output, "w") as handle:
        json.dump(record, handle)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_ddp_ranks_get_their_own_seeds(cardiac, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = cardiac.workspace.environment(NNUNET_LOSSES_SEED="7", nnUNet_n_proc_DA="0")
    outputs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "store"), str(rank), str(cardiac.folder), SMALL_PLANS, str(outputs[rank])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(2)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-3000:]
    ranks = [json.loads(path.read_text()) for path in outputs]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["init"] != ranks[1]["init"]
    assert ranks[0]["sample_seeds"]["main"] != ranks[1]["sample_seeds"]["main"]
    assert ranks[0]["first_draw"] != ranks[1]["first_draw"]
