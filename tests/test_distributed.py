"""One run over two torchrun processes (gloo on CPU): the same accuracy matrix as one process, written once.

Each process encodes a share of the feature cache's misses, scores a share of every test experience and
trains on a share of every minibatch with the gradients summed (clprompt.training.distributed)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from clprompt.run import run
from clprompt.training.distributed import Distributed
from helpers import REPO, compose_config

RUN = ["scenario=tiny_colors", "model=tiny", "progress=false", "device=cpu", "train.epochs=2",
       "train.warmup_epochs=0", "train.batch_size=4", "scenario.train_per_class=6"]


def launch(command: list[str], env: dict, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HYDRA_FULL_ERROR="1", OMP_NUM_THREADS="1", **env))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("method", ["coop", "vpt_shallow"])
def test_two_processes_give_the_one_process_matrix_and_write_once(tmp_path, method):
    """coop: features encoded in shares through the cache; vpt_shallow: images, trained data-parallel."""
    overrides = RUN + [f"method={method}", f"cache.dir={tmp_path / 'cache'}"]
    run(compose_config(overrides), tmp_path / "one")   # the one-process run, in this process
    two = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  "-m", "clprompt.run", *overrides, f"cache.dir={tmp_path / 'cache2'}",
                  f"hydra.run.dir={tmp_path / 'two'}"], {})
    assert two.returncode == 0, two.stderr[-3000:]
    single = json.loads((tmp_path / "one" / "results.json").read_text())
    shared = json.loads((tmp_path / "two" / "results.json").read_text())
    assert shared["distributed"] == {"processes": 2, "backend": "gloo"}
    assert single["distributed"] == {"processes": 1, "backend": None}
    np.testing.assert_allclose(np.array(shared["accuracy_matrix"], float),
                               np.array(single["accuracy_matrix"], float), atol=1e-6)
    # the adapted states of the two runs: the same parameters up to the order of float sums
    for experience in (1, 2, 3):
        a = torch.load(tmp_path / "one" / "adapted_state" / f"experience_{experience}.pt", weights_only=True)
        b = torch.load(tmp_path / "two" / "adapted_state" / f"experience_{experience}.pt", weights_only=True)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4)
    assert two.stdout.count("accuracy matrix") == 1   # only the main process prints and writes
    if method == "coop":   # both processes' features came through the cache, written once
        assert shared["feature_cache"]["misses"] == single["feature_cache"]["misses"] > 0


def test_a_missing_process_is_named_and_nothing_is_written(tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "CLPROMPT_DIST_TIMEOUT_S": "3"}
    alone = launch([sys.executable, "-m", "clprompt.run", *RUN, "method=coop",
                    f"hydra.run.dir={tmp_path / 'run'}"], env, timeout=300)
    assert alone.returncode == 1
    assert "process 0 of 2: the other processes of the run did not all join within 3 s" in alone.stderr
    assert not (tmp_path / "run" / "results.json").exists()


def test_one_process_is_a_plain_run():
    alone = Distributed()
    assert not alone.enabled and alone.is_main
    assert alone.share(5).tolist() == [0, 1, 2, 3, 4]
    values = torch.arange(3.0)
    assert alone.sum(values) is values and alone.gather_shares(values, 3) is values
    assert alone.union(np.array([True, False])).tolist() == [True, False]
    assert [Distributed(rank, 3).share(7).tolist() for rank in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
