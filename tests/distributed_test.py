"""Multi-host without hardware: two processes on 127.0.0.1 with 4 CPU devices each (gloo collectives) give the
losses of one 8-device process on the same global batches; their checkpoint then resumes in one process on a
different mesh."""

import socket

import numpy as np
import pytest
from lmx_cli import FAST, run, start, train_losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_two_processes_equal_one_and_resume_on_another_mesh(cache, tmp_path):
    # input_shards=2 fixes the data stream: block k of every global batch comes from seqio shard k, whichever
    # process reads it. Default mesh: fsdp over all 8 devices. A constant learning rate after warmup makes the first
    # 4 steps the same whether a run is 4 or 6 steps long, so one 6-step single-process run is the reference for the
    # two-process run (4 steps) and for its resumption on another mesh (steps 5 and 6).
    common = [
        *FAST,
        "--config.optim.decay=constant",
        "--config.checkpoint.every_steps=4",
        "--config.data.input_shards=2",
    ]
    single = run([f"--workdir={tmp_path / 'single'}", *common, "--config.train.steps=6"], cache_dir=cache, devices=8)
    assert single.returncode == 0, single.stderr[-3000:]

    port = _free_port()
    multi = tmp_path / "multi"
    procs = [
        start(
            [
                f"--workdir={multi}",
                *common,
                "--config.train.steps=4",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cache_dir=cache,
            devices=4,
            log_path=tmp_path / f"process_{i}.log",
        )
        for i in range(2)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    logs = [(tmp_path / f"process_{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert "8 cpu devices in 2 processes" in logs[0]

    one, two = train_losses(tmp_path / "single"), train_losses(multi)
    assert sorted(one) == [1, 2, 3, 4, 5, 6] and sorted(two) == [1, 2, 3, 4]
    np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(two)], rtol=1e-5)

    # The two-process checkpoint (fsdp=8 over two hosts) resumes in one process on (fsdp=4, tensor=2).
    resumed = run(
        [f"--workdir={multi}", *common, "--config.train.steps=6", "--config.mesh.fsdp=4", "--config.mesh.tensor=2"],
        cache_dir=cache,
        devices=8,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {multi}/checkpoints/4" in resumed.stdout
    two = train_losses(multi)
    np.testing.assert_allclose([two[5], two[6]], [one[5], one[6]], rtol=1e-5)
