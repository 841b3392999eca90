"""`kdbench sweep --executor slurm` against a real one-node Slurm cluster started for the test.

The fixture starts munged, MariaDB and slurmdbd (job accounting, so that `sacct`, which submitit reads job states
from, answers as on a cluster), slurmctld and slurmd, with every configuration, state, spool and log file in a
temporary folder, and stops them at the end. It needs root (SlurmUser=root) and the Debian packages in
`SLURM_PACKAGES`, which `make test` installs when they are missing and apt-get is available; the test skips with
its reason where they are absent or where the cluster does not come up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SLURM_PACKAGES = "slurmctld slurmd slurmdbd slurm-client munge mariadb-server-core mariadb-client-core"
PROGRAMS = ("munged", "mungekey", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch",
            "squeue", "sinfo", "scontrol", "scancel", "sacct")
# Long enough that a preemption sent after the first checkpoint lands mid-run on a loaded 2-core CI machine (80 steps
# once finished before `scontrol requeue` took effect there); still seconds per cell.
STEPS, CKPT_EVERY = 300, 5


class SlurmError(Exception):
    """A command or daemon of the test cluster failed; while starting it, the tests skip with this message."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


class LocalSlurm:
    """A one-node Slurm cluster whose files all live in `folder`; `env` points Slurm's commands at it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        self.daemons: list[tuple[str, subprocess.Popen]] = []

    def __call__(self, *command: str) -> str:
        """Run a command (Slurm's commands reach this cluster) in the cluster's folder; its stdout."""
        done = subprocess.run(command, env=self.env, cwd=self.folder, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise SlurmError(f"{' '.join(command[:3])} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        return done.stdout

    def start(self) -> None:
        folder = self.folder
        for name in ("munge", "db", "state", "spool"):
            (folder / name).mkdir()
        (folder / "munge-key").mkdir(mode=0o700)
        munge_socket = folder / "munge" / "socket"
        ctld_port, slurmd_port, dbd_port, db_port = (_free_port() for _ in range(4))
        self("mungekey", "--create", f"--keyfile={folder / 'munge-key' / 'munge.key'}")
        self._start("munged", "munged", "--foreground", f"--socket={munge_socket}",
                    f"--key-file={folder / 'munge-key' / 'munge.key'}", f"--pid-file={folder / 'munge' / 'pid'}",
                    f"--log-file={folder / 'munge' / 'log'}", f"--seed-file={folder / 'munge' / 'seed'}")
        self._wait("munged", munge_socket.exists, 20)

        self("mariadb-install-db", "--no-defaults", f"--datadir={folder / 'db' / 'data'}", "--user=root",
                  "--auth-root-authentication-method=normal", "--skip-test-db")
        self._start("mariadbd", "mariadbd", "--no-defaults", f"--datadir={folder / 'db' / 'data'}", "--user=root",
                    f"--socket={folder / 'db' / 'socket'}", f"--port={db_port}", "--bind-address=127.0.0.1",
                    f"--pid-file={folder / 'db' / 'pid'}", "--skip-log-bin")
        self._wait("mariadbd", lambda: _port_open(db_port), 60)

        dbd_conf = folder / "slurmdbd.conf"  # slurmdbd reads it beside slurm.conf and wants it private
        dbd_conf.write_text(
            f"AuthType=auth/munge\nAuthInfo=socket={munge_socket}\nDbdHost=localhost\nDbdAddr=127.0.0.1\n"
            f"DbdPort={dbd_port}\nSlurmUser=root\nLogFile={folder / 'slurmdbd.log'}\n"
            f"PidFile={folder / 'slurmdbd.pid'}\nStorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
            f"StoragePort={db_port}\nStorageUser=root\nStorageLoc=kdbench_test_acct\n")
        dbd_conf.chmod(0o600)
        # The node as slurmd sees this machine (its real CPUs and memory), reached on the loopback address.
        node = self("slurmd", "-C").splitlines()[0]
        host = re.match(r"NodeName=(\S+)", node).group(1)
        (folder / "slurm.conf").write_text("\n".join([
            "ClusterName=kdbenchtest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}", "SlurmUser=root", "SlurmdUser=root",
            # cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
            "AuthType=auth/munge", f"AuthInfo=socket={munge_socket},cred_expire=5", "CredType=cred/munge",
            f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={dbd_port}", f"AccountingStoragePass={munge_socket}",
            # schedule every second (not every 30-60 s) and kill right after SIGTERM: a test runs in seconds
            "SchedulerParameters=sched_interval=1,bf_interval=1", "KillWait=0", "ReturnToService=2",
            "MailProg=/bin/true",
            f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        self._start("slurmdbd", "slurmdbd", "-D")
        self._wait("slurmdbd", lambda: _port_open(dbd_port), 60)
        self._start("slurmctld", "slurmctld", "-D")
        self._wait("slurmctld", lambda: _port_open(ctld_port), 60)
        self._start("slurmd", "slurmd", "-D")
        self._wait("the node", lambda: self._sinfo() == "idle", 60)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this cluster started, the last started first."""
        try:
            jobs = self("squeue", "-h", "-o", "%A").split()
            if jobs:
                self("scancel", *jobs)
                deadline = time.monotonic() + 30
                while self("squeue", "-h", "-o", "%A").strip() and time.monotonic() < deadline:
                    time.sleep(0.5)
        except (SlurmError, OSError, subprocess.TimeoutExpired):
            pass  # slurmctld is gone: nothing can run any more jobs
        for _, process in reversed(self.daemons):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.folder / name
        text = path.read_text(errors="replace") if path.is_file() else ""
        return f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:])

    def _sinfo(self) -> str:
        try:
            return self("sinfo", "--noheader", "--format=%T").strip()
        except SlurmError:  # slurmctld is not answering yet
            return ""

    def _start(self, name: str, *command: str) -> None:
        with open(self.folder / f"{name}.out", "w") as out:
            process = subprocess.Popen(command, env=self.env, cwd=self.folder, stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=subprocess.STDOUT)
        self.daemons.append((name, process))

    def _wait(self, what: str, ready: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            for name, process in self.daemons:
                if process.poll() is not None:
                    raise SlurmError(f"{name} exited with status {process.returncode}: "
                                      f"{self.log_tail(f'{name}.out', 5)}")
            if time.monotonic() > deadline:
                logs = "\n".join(self.log_tail(n, 5) for n in ("slurmctld.log", "slurmd.log", "slurmdbd.log"))
                raise SlurmError(f"{what} not ready after {seconds:.0f} s\n{logs}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm() -> Iterator[LocalSlurm]:
    missing = [name for name in PROGRAMS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"Slurm not installed ({', '.join(missing)} missing): apt-get install {SLURM_PACKAGES} "
                    "(`make test` does it when apt-get is available)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons as root (SlurmUser=root); run the tests as root")
    # Not pytest's tmp_path: munged wants every folder above its socket open to all (pytest's are 0700).
    folder = Path(tempfile.mkdtemp(prefix="kdbench-slurm-"))
    folder.chmod(0o755)
    cluster = LocalSlurm(folder)
    try:
        try:
            cluster.start()
        except SlurmError as exc:
            pytest.skip(f"the test Slurm cluster did not come up: {exc}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(out_dir: Path, executor: str, jobs_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kd", "sweep", "--profile", "smoke", "--methods", "none,logits", "--teachers",
            "rcan", "--threads", "1", "--no-progress", "--executor", executor, "--out-dir", str(out_dir),
            "--set", f"train.steps={STEPS}", "--set", f"train.ckpt_every={CKPT_EVERY}", "--set", "train.val_every=0",
            "--set", f"cluster.log_dir={jobs_dir}", "--set", "cluster.gpus_per_node=0",
            "--set", "cluster.cpus_per_task=1", "--set", "cluster.mem_gb=1"]


def _slurm_job(run_id: str, jobs_dir: Path) -> str | None:
    """The Slurm job (array task) training `run_id`, from the submitit log that names it."""
    for log in jobs_dir.glob("*_log.err"):
        if run_id in log.read_text(errors="replace"):
            array_job, task = log.name.split("_")[:2]
            return f"{array_job}_{task}"
    return None


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_time")} for line in lines]


def test_sweep_on_slurm_resumes_preempted_cells_to_the_same_metrics(slurm, tmp_path):
    """A 2-cell grid and its teacher as Slurm jobs; one cell requeued by `scontrol requeue` (killed and put back in
    the queue, as preemption does), the other sent SIGUSR2 (Slurm's signal before a time limit: submitit calls the
    job's checkpoint() and requeues it). Both resume from their checkpoints and finish bitwise as uninterrupted."""
    env = {**slurm.env, "KDBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    runs, jobs = tmp_path / "runs", tmp_path / "jobs"
    with open(tmp_path / "sweep.out", "w") as out, open(tmp_path / "sweep.err", "w") as err:
        sweep = subprocess.Popen(_sweep(runs, "slurm", jobs), cwd=REPO, env=env, stdout=out, stderr=err)
    preempted: dict[str, tuple[str, str]] = {}  # run id -> (how, Slurm job)
    steps_when_preempted: dict[str, int] = {}  # for the failure message: how far the run had got
    try:
        deadline = time.monotonic() + 300
        while len(preempted) < 2 and sweep.poll() is None and time.monotonic() < deadline:
            for run_dir in sorted(runs.glob("asid-*")):
                job = _slurm_job(run_dir.name, jobs)
                if run_dir.name in preempted or job is None or not (run_dir / "checkpoints" / "last.pt").exists():
                    continue
                log = (run_dir / "train.log").read_text(errors="replace")
                steps_when_preempted[run_dir.name] = len(re.findall(r"step \d+/", log))
                if "-none-" in run_dir.name:
                    slurm("scontrol", "requeue", job)
                    preempted[run_dir.name] = ("requeue", job)
                else:
                    slurm("scancel", "--signal=USR2", job)
                    preempted[run_dir.name] = ("USR2", job)
            time.sleep(0.05)
        # The uninterrupted runs of the same cells, trained inline while the preempted jobs wait to start again.
        reference = subprocess.run(_sweep(tmp_path / "reference", "inline", jobs), cwd=REPO, env=env,
                                   capture_output=True, text=True, timeout=600)
        sweep.wait(timeout=max(deadline - time.monotonic(), 60))
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    out, err = (tmp_path / "sweep.out").read_text(), (tmp_path / "sweep.err").read_text()
    cluster_logs = "\n".join(slurm.log_tail(name) for name in ("slurmctld.log", "slurmd.log"))
    assert len(preempted) == 2, f"both cells should have been caught mid-run: {preempted}\n{err}\n{cluster_logs}"
    assert sweep.returncode == 0, f"{out}\n{err}\n{cluster_logs}"
    assert reference.returncode == 0, reference.stderr

    flat_err = " ".join(err.split())
    assert "training 1 teacher(s) the zoo lacks, one slurm job each" in flat_err
    assert "submitting 2 cell(s) to the slurm executor" in flat_err
    results = out[out.index("sweep results"):]
    assert len(re.findall(r"default \d+\.\d\d/0\.\d{4}", results)) == 2, results
    assert re.findall(r"^\d\s+(\S+)\s*$", results, re.M) == ["ran", "ran"], results

    for run_id, (how, job) in preempted.items():
        run_dir, reference_dir = runs / run_id, tmp_path / "reference" / run_id
        log = (run_dir / "train.log").read_text()
        resumed_at = [int(step) for step in re.findall(rf"resuming at step (\d+)/{STEPS}", log)]
        assert "resuming run" in log and len(resumed_at) == 1, log
        assert 0 < resumed_at[0] < STEPS and resumed_at[0] % CKPT_EVERY == 0, (
            f"{how} sent at step ~{steps_when_preempted[run_id]}, resumed at {resumed_at}")
        # Slurm's own record: the job went back to the queue once, then completed.
        history = slurm("sacct", "--duplicates", "--allocations", "--noheader", "--parsable2", "--format=State",
                        f"--jobs={job}").split()
        assert history == ["REQUEUED", "COMPLETED"], (how, job, history)
        assert json.loads((run_dir / "summary.json").read_text())["datasets"] == json.loads(
            (reference_dir / "summary.json").read_text())["datasets"]
        assert _records(run_dir) == _records(reference_dir), how
        if how == "USR2":  # submitit called the cell's checkpoint() and requeued the job itself
            job_log = next(jobs.glob(f"{job}_*_log.out")).read_text()
            assert "Calling checkpoint method" in job_log and f"Requeued job {job} (" in job_log, job_log


def test_jobs_the_cluster_cannot_run_are_told(slurm, tmp_path, monkeypatch, capsys):
    """sbatch refuses a GPU on a cluster without one: a one-line error. A job asking for more CPUs than the node has
    is accepted but held (PartitionConfig): the sweep says so, and reports the cell failed once it is cancelled."""
    from kd.cli import main

    env = {**slurm.env, "KDBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    argv = ["sweep", "--profile", "smoke", "--methods", "none", "--threads", "1", "--no-progress", "--executor",
            "slurm", "--out-dir", str(tmp_path / "runs"), "--set", f"cluster.log_dir={tmp_path / 'jobs'}"]
    for name in ("SLURM_CONF", "KDBENCH_CACHE"):
        monkeypatch.setenv(name, env[name])
    assert main([*argv, "--set", "cluster.gpus_per_node=1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Slurm refused the jobs: Invalid generic resource (gres) specification." in err, err
    assert not slurm("squeue", "--noheader")

    cpus = int(slurm("sinfo", "--noheader", "--format=%c").split()[0])
    with open(tmp_path / "sweep.err", "w") as stderr:
        sweep = subprocess.Popen([sys.executable, "-m", "kd", *argv, "--set", "cluster.gpus_per_node=0",
                                  "--set", f"cluster.cpus_per_task={cpus + 1}", "--set", "cluster.mem_gb=1"],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        deadline, told = time.monotonic() + 120, None
        while told is None and sweep.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            told = re.search(r"Slurm holds job (\S+) \(PartitionConfig\)", (tmp_path / "sweep.err").read_text())
        assert told, (tmp_path / "sweep.err").read_text()
        slurm("scancel", told.group(1))
        out, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    assert sweep.returncode == 1
    assert re.search(r"failed: job \S+ failed: .*CANCELLED", " ".join(out.split())), out
