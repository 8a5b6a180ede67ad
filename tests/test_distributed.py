"""Scale-out with torchrun: 2 gloo processes give exactly the results of one process; merges refuse other configs."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffguard.run.run_config import build_run_config
from diffguard.run.distributed import Dist, dist_from_env, merge_stores
from diffguard.run.runner import Runner
from diffguard.run.store import ResultStore, StoreError
from test_runner import tiny_config

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _bench(args: list[str], torchrun: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(torchrun),
              "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0", "--max-restarts", "0"] if torchrun \
        else [sys.executable]
    return subprocess.run([*launch, "-m", "diffguard", "benchmark", *args, "--no-progress", "--threads", "1"],
                          check=False, env=env, capture_output=True, text=True,
                          timeout=300)


def test_dist_from_env_and_ownership(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert dist_from_env() == Dist(0, 1, 0) and not Dist().active
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    d = dist_from_env()
    assert d.active and not d.main and [b for b in range(7) if d.owns(b)] == [2, 5]
    assert d.store_path(Path("o")) == Path("o/results.rank2.sqlite")
    assert Dist().store_path(Path("o")) == Path("o/results.sqlite")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="invalid RANK"):
        dist_from_env()


@pytest.mark.slow
def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from diffguard.run.distributed import choose_backend

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_backend() == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert choose_backend() == "gloo"  # more processes than GPUs on this machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert choose_backend() == "nccl"


def test_sharded_ranks_cover_every_batch_once(tmp_path: Path, tiny_models: tuple[Path, Path],
                                              fake_fmnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks as threads (a thread barrier for the process group's): disjoint batches that merge to the whole."""
    import threading

    import diffguard.run.distributed as dist_mod

    wall = threading.Barrier(2, timeout=120)
    monkeypatch.setattr(dist_mod, "barrier", lambda d: wall.wait())
    cfg = tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=3, val_limit=2, batch_size=2)
    run = build_run_config(cfg)
    returned: dict[int, bool] = {}

    def rank(r: int) -> None:
        store = Runner(run, tmp_path / "d", progress=False, dist=Dist(r, 2)).run()
        returned[r] = store is not None
        if store is not None:
            store.close()  # SQLite connections stay in their thread

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert returned == {0: True, 1: False}
    with ResultStore(tmp_path / "d" / "results.sqlite") as merged, sqlite3.connect(tmp_path / "d" / "results.rank1.sqlite") as r1:
        got = merged.db.execute("SELECT method, set_name, batch FROM batches ORDER BY 1, 2, 3").fetchall()
        ones = r1.execute("SELECT method, set_name, batch FROM batches WHERE method != 'classifier'").fetchall()
    assert ones and {m for m, _, _ in ones} == {"dg"} and all(b % 2 == 1 for _, _, b in ones)
    with Runner(run, tmp_path / "s", progress=False).run() as single:
        want = single.db.execute("SELECT method, set_name, batch FROM batches ORDER BY 1, 2, 3").fetchall()
        scores = single.db.execute("SELECT * FROM scores ORDER BY 1, 2, 3, 4").fetchall()
    assert got == want
    with ResultStore(tmp_path / "d" / "results.sqlite") as m:
        assert m.db.execute("SELECT * FROM scores ORDER BY 1, 2, 3, 4").fetchall() == scores


def test_merge_refuses_other_configuration(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "a.sqlite", {"config": {"limit": 2, "seed": 0}}) as a, \
            ResultStore(tmp_path / "b.sqlite", {"config": {"limit": 3, "seed": 0}}) as b:
        b.write_batch("msp", "test", 0, [1], {"score": [0.5]})
    with ResultStore(tmp_path / "a.sqlite") as a:
        with pytest.raises(StoreError, match=r"differs in: \['limit'\]"):
            merge_stores(a, [tmp_path / "b.sqlite"])
        assert a.db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 0
    with ResultStore(tmp_path / "c.sqlite", {"config": {"limit": 2, "seed": 0}}) as c:
        c.set_meta("method:msp", {"name": "msp", "params": {"temperature": 2}})
    with ResultStore(tmp_path / "a.sqlite") as a:
        a.set_meta("method:msp", {"name": "msp", "params": {}})
        with pytest.raises(StoreError, match="'msp' was run with another configuration"):
            merge_stores(a, [tmp_path / "c.sqlite"])


@pytest.mark.slow
def test_torchrun_two_processes_equal_single_process(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                     fake_fmnist_root: Path) -> None:
    cfg = tiny_config(tiny_models, batch_size=2, limit=5, val_limit=3)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    common = [str(cfg_file), "--data-root", str(fake_fmnist_root)]
    two = _bench([*common, "--out", str(tmp_path / "two")], torchrun=2)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    one = _bench([*common, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, (one.stdout + one.stderr)[-3000:]
    for name in ("scores.csv", "metrics.json", "thresholds.json"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert {p.name for p in (tmp_path / "two").glob("results*.sqlite")} == {
        "results.sqlite", "results.rank0.sqlite", "results.rank1.sqlite"}
    with sqlite3.connect(tmp_path / "two" / "results.rank1.sqlite") as con:
        dg = con.execute("SELECT batch FROM batches WHERE method = 'dg'").fetchall()
    assert dg and all(b % 2 == 1 for (b,) in dg)
    again = _bench([*common, "--out", str(tmp_path / "two")], torchrun=2)  # resumes: nothing left to compute
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert (tmp_path / "two" / "scores.csv").read_bytes() == (tmp_path / "one" / "scores.csv").read_bytes()


def test_rank_zero_refuses_a_changed_method_before_work(tmp_path: Path, tiny_models: tuple[Path, Path],
                                                        fake_fmnist_root: Path) -> None:
    base = tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=2, val_limit=2, train_limit=8)
    base["methods"], base["fusion"] = base["methods"][:1], []
    Runner(build_run_config(base), tmp_path / "o", progress=False).run().close()
    changed = {**base, "methods": [{"name": "msp", "method": "mls"}]}
    with pytest.raises(StoreError, match="another configuration"):
        Runner(build_run_config(changed), tmp_path / "o", progress=False, dist=Dist(0, 2)).run()
    assert not (tmp_path / "o" / "results.rank1.sqlite").exists()


def test_two_ranks_resume_a_single_process_run(tmp_path: Path, tiny_models: tuple[Path, Path],
                                               fake_fmnist_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder started by one process (msp only), finished by two ranks: the ranks copy its classifier pass,
    skip its finished batches, and the merged results equal one uninterrupted process's."""
    import threading

    import diffguard.run.distributed as dist_mod

    cfg = build_run_config(tiny_config(tiny_models, data_root=str(fake_fmnist_root), limit=3, val_limit=2,
                                       batch_size=2))
    Runner(cfg, tmp_path / "d", progress=False).run(["msp"]).close()
    with sqlite3.connect(tmp_path / "d" / "results.sqlite") as con:
        first_pass = set(con.execute("SELECT * FROM batches WHERE method = 'classifier'"))
    wall = threading.Barrier(2, timeout=120)
    monkeypatch.setattr(dist_mod, "barrier", lambda d: wall.wait())
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:
            store = Runner(cfg, tmp_path / "d", progress=False, dist=Dist(r, 2)).run()
            if store is not None:
                store.close()
        except BaseException as err:  # surfaced below; a dead thread would leave its peer at the barrier
            errors.append(err)
            wall.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for r in (0, 1):
        with sqlite3.connect(tmp_path / "d" / f"results.rank{r}.sqlite") as con:
            classifier = set(con.execute("SELECT * FROM batches WHERE method = 'classifier'"))
            mine = con.execute("SELECT COUNT(*) FROM batches WHERE method = 'msp'").fetchone()[0]
            dg = con.execute("SELECT COUNT(*) FROM batches WHERE method = 'dg'").fetchone()[0]
        assert mine == 0, f"rank {r} recomputed msp"
        assert classifier == first_pass, f"rank {r} recomputed the classifier pass"  # same markers, same times
        assert dg > 0
    with Runner(cfg, tmp_path / "s", progress=False).run() as single:
        want = single.db.execute("SELECT * FROM scores ORDER BY 1, 2, 3, 4").fetchall()
    with ResultStore(tmp_path / "d" / "results.sqlite") as merged:
        assert merged.db.execute("SELECT * FROM scores ORDER BY 1, 2, 3, 4").fetchall() == want
