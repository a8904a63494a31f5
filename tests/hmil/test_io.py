import os

import pytest

from hmil.io import append_jsonl, atomic_path, read_jsonl, write_json_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_outputs_get_umask_permissions_not_0600(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": float("nan")})
    assert target.read_text().strip().replace(" ", "").replace("\n", "") == '{"a":null}'
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~mask


def test_torn_last_jsonl_line_is_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"epoch": 0})
    append_jsonl(path, {"epoch": 1})
    with open(path, "a") as handle:
        handle.write('{"epoch": 2, "lo')  # killed mid-write
    assert [r["epoch"] for r in read_jsonl(path)] == [0, 1]


def test_lock_of_a_finished_slurm_job_on_another_node_is_stale(tmp_path, monkeypatch):
    """A node that died leaves a lock naming another host; SLURM tells whether its job lives."""
    import json
    import stat

    from hmil.train.runs import FoldLock, fold_paths

    paths = fold_paths(tmp_path, 0)
    paths.root.mkdir(parents=True)
    paths.lock.write_text(json.dumps({"pid": 1, "host": "dead-node", "slurm_job_id": "42"}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text(
        "#!/bin/sh\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n"
    )
    squeue.chmod(squeue.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with FoldLock(paths):  # taken over
        assert json.loads(paths.lock.read_text())["host"] != "dead-node"
    squeue.write_text("#!/bin/sh\necho RUNNING\n")
    paths.lock.write_text(json.dumps({"pid": 1, "host": "live-node", "slurm_job_id": "43"}))
    from hmil.errors import RunError

    with pytest.raises(RunError, match="already being trained by pid 1 on live-node"):
        FoldLock(paths).__enter__()
