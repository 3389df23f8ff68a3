"""`pidns export` against the real thing: namespaces and zombies made here, a Prometheus server
scraping it, promtool linting it, prometheus_client's parsers reading it back, and bad input."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

PIDNS = [sys.executable, "-m", "pidns.cli.main"]
# what Prometheus 2.42 sends: OpenMetrics first, the text format as a fallback
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

root = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


def wait_for(predicate: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not (callable(predicate) and predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parse_text(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    wanted = frozenset(labels.items())
    for (sample, have), v in samples(text).items():
        if sample == name and wanted <= have:
            return v
    return None


class Exporter:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.port = port

    def metrics(self, accept: str | None = None) -> str:
        return get(f"{self.url}/metrics", accept)[1]


@contextlib.contextmanager
def exporter(*extra: str) -> Iterator[Exporter]:
    port = free_port()
    proc = subprocess.Popen(
        [*PIDNS, "export", "--listen", f"127.0.0.1:{port}", "--min-interval", "0", *extra],
        stderr=subprocess.PIPE,
        text=True,
    )
    ours = Exporter(proc, port)
    try:

        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with contextlib.suppress(OSError):
                ours.metrics()
                return True
            return False

        wait_for(up, 30, "pidns export did not answer")
        yield ours
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in stderr, stderr


@contextlib.contextmanager
def namespace(script: str) -> Iterator[int]:
    """A namespace whose init (pid 1) is `sh -c script` (or what it execs); yields its inode."""
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        start_new_session=True,
    )
    own = os.stat("/proc/self/ns/pid").st_ino
    init = 0
    try:

        def started() -> bool:
            nonlocal init
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if not kids:
                return False
            init = int(kids[0])
            with contextlib.suppress(OSError):
                return os.stat(f"/proc/{init}/ns/pid").st_ino != own
            return False

        wait_for(started, 15, "the namespace did not start")
        yield os.stat(f"/proc/{init}/ns/pid").st_ino
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)  # the namespace dies with its init
        proc.kill()
        proc.wait(timeout=10)


# -- a real Prometheus ------------------------------------------------------------------------


@contextlib.contextmanager
def prometheus(target: str) -> Iterator[str]:
    """Debian's Prometheus on loopback, scraping `target` every second; yields its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("needs Prometheus (apt-get install prometheus)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pidns-prom-") as tmp:
        config = Path(tmp, "prometheus.yml")
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: pidns\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:

            def ready() -> bool:
                assert proc.poll() is None, "prometheus exited"
                with contextlib.suppress(OSError):
                    return get(f"{url}/-/ready")[1].strip() != ""
                return False

            wait_for(ready, 30, "prometheus did not become ready")
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def query(base: str, promql: str) -> list[dict[str, object]]:
    body = json.loads(get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))[1])
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


@root
def test_prometheus_scrapes_a_namespace_and_counts_its_zombie() -> None:
    # pid 1 of this namespace is `sleep`: it never reaps the `sleep 0` child it leaves behind
    with (
        namespace("sleep 0 & exec sleep 600") as ino,
        exporter() as ours,
        prometheus(f"127.0.0.1:{ours.port}") as base,
    ):

        def seen(promql: str, expected: float) -> bool:
            result = query(base, promql)
            return bool(result) and float(result[0]["value"][1]) == expected  # type: ignore[index]

        wait_for(lambda: seen('up{job="pidns"}', 1), 30, "Prometheus never scraped pidns")
        wait_for(
            lambda: seen(f'pidns_namespace_tasks{{ns="{ino}",state="Z"}}', 1),
            30,
            "Prometheus has no zombie counted in the test's namespace",
        )
        info = query(base, f'pidns_namespace_info{{ns="{ino}"}}')
        assert len(info) == 1
        labels = info[0]["metric"]
        assert isinstance(labels, dict)
        assert labels["level"] == "1" and labels["init_comm"] == "sleep"
        assert labels["parent_ns"] == str(os.stat("/proc/self/ns/pid").st_ino)
        assert seen(f'pidns_namespace_tasks{{ns="{ino}",state="S"}}', 1)
        assert seen(f'pidns_namespace_threads{{ns="{ino}"}}', 1)  # the zombie has none
        # a zombie child of pid 1 older than the grace: init does not reap
        wait_for(
            lambda: seen(f'pidns_namespace_init_reaps{{ns="{ino}"}}', 0),
            30,
            "init_reaps never went to 0 for an init that leaves a zombie",
        )
        age = query(base, f'pidns_namespace_zombies_oldest_age_seconds{{ns="{ino}"}}')
        assert float(age[0]["value"][1]) > 5  # type: ignore[index]
        assert query(base, f'pidns_namespace_forks_total{{ns="{ino}"}}')
        # no series carries a pid label
        names = get(f"{base}/api/v1/labels")[1]
        assert '"pid"' not in names and '"host_pid"' not in names


@root
def test_both_formats_lint_and_parse() -> None:
    with namespace("sleep 0 & exec sleep 600"), exporter() as ours:
        content_type, text = get(f"{ours.url}/metrics")
        assert content_type.startswith("text/plain; version=0.0.4")
        lint = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        assert value(text, "pidns_namespace_tasks", state="Z") is not None

        content_type, om = get(f"{ours.url}/metrics", PROMETHEUS_ACCEPT)
        assert content_type.startswith("application/openmetrics-text")
        assert om.endswith("# EOF\n")
        # promtool 2.42 lints only the 0.0.4 text format ("unknown metric type info" on
        # OpenMetrics); prometheus_client's OpenMetrics parser is strict and checks the rest
        families = {f.name: f for f in parse_openmetrics(om)}  # type: ignore[no-untyped-call]
        assert families["pidns_namespace"].type == "info"
        assert families["pidns_namespace_forks"].type == "counter"
        assert families["pidns_scrape_duration_seconds"].unit == "seconds"


@root
def test_counters_follow_forks_and_exits_the_test_causes() -> None:
    with namespace("exec sleep 600") as ino, exporter() as ours:
        init = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _ns_of(int(p)) == ino)
        before = ours.metrics()
        forks0 = value(before, "pidns_namespace_forks_total", ns=str(ino)) or 0
        exits0 = value(before, "pidns_namespace_exits_total", ns=str(ino)) or 0
        # nsenter's sh joins the namespace and forks 50 short-lived children there
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(init),
                "-p",
                "--",
                "sh",
                "-c",
                "for i in $(seq 50); do (:); done",
            ],
            check=True,
        )

        def counted() -> bool:
            after = ours.metrics()
            forks = value(after, "pidns_namespace_forks_total", ns=str(ino)) or 0
            exits = value(after, "pidns_namespace_exits_total", ns=str(ino)) or 0
            # the 50 subshells and the shell nsenter forked (not nsenter itself: it joined)
            return forks - forks0 >= 51 and exits - exits0 >= 51

        wait_for(counted, 10, "forks/exits of the test's namespace were not counted")


def _ns_of(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return 0


@root
def test_a_namespace_that_dies_leaves_the_next_scrape() -> None:
    with exporter() as ours:
        with namespace("sleep 600 & wait") as ino:
            assert value(ours.metrics(), "pidns_namespace_info", ns=str(ino)) == 1
            served = json.loads(get(f"{ours.url}/namespaces.json")[1])
            ls = subprocess.run([*PIDNS, "ls", "--json"], capture_output=True, text=True)
            # the same record as `pidns ls --json` prints for the test's namespace
            mine = [r for r in served if r["id"] == ino]
            assert mine and mine == [r for r in json.loads(ls.stdout) if r["id"] == ino]
            assert mine[0]["init_command"] == "sh -c sleep 600 & wait"
        time.sleep(0.2)  # the kernel frees the namespace once its last task is reaped

        def gone() -> bool:
            text = ours.metrics()
            return all(dict(labels).get("ns") != str(ino) for _, labels in samples(text))

        wait_for(gone, 10, "a dead namespace's series stayed")


@root
def test_pids_limit_of_the_init_cgroup() -> None:
    hierarchy = Path("/sys/fs/cgroup/pids")
    if not (hierarchy / "cgroup.procs").exists():
        pytest.skip("needs the cgroup v1 pids controller (v2 is tested on fixture trees)")
    group = hierarchy / f"pidns-export-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "pids.max").write_text("64\n")
        script = (
            f"echo $$ > {group}/cgroup.procs; exec unshare --pid --fork sh -c 'sleep 600 & wait'"
        )
        with exporter() as ours:
            proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
            try:
                wait_for(
                    lambda: len((group / "cgroup.procs").read_text().split()) == 3,
                    10,
                    "the limited namespace did not start",
                )
                pids = (group / "cgroup.procs").read_text().split()
                ino = max(_ns_of(int(p)) for p in pids)
                text = ours.metrics()
                assert value(text, "pidns_namespace_pids_max", ns=str(ino)) == 64
                assert value(text, "pidns_namespace_pids_current", ns=str(ino)) == 3
                # the host namespace's init is in the root cgroup: no limit to export
                own = str(os.stat("/proc/self/ns/pid").st_ino)
                assert value(text, "pidns_namespace_pids_max", ns=own) is None
            finally:
                os.killpg(proc.pid, signal.SIGKILL)
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                proc.wait()
                wait_for(lambda: not (group / "cgroup.procs").read_text().split(), 10, "left")
    finally:
        group.rmdir()


@root
def test_textfile_is_read_back_by_prometheus_client() -> None:
    with namespace("sleep 0 & exec sleep 600") as ino, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "pidns.prom")
        done = subprocess.run(
            [*PIDNS, "export", "--textfile", str(path), "--once"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert os.listdir(tmp) == ["pidns.prom"]  # the temporary file was renamed over it
        text = path.read_text()
        assert value(text, "pidns_namespace_tasks", ns=str(ino), state="Z") == 1
        assert value(text, "pidns_namespace_info", ns=str(ino), level="1") == 1
        assert value(text, "pidns_scrape_duration_seconds") is not None
        # one-shot: no counters, as nothing was counted
        assert value(text, "pidns_namespace_forks_total") is None


@root
def test_scrapes_while_tasks_churn() -> None:
    """About 1,000 exits a second in a namespace: every scrape answers, counters only grow, and
    once the churn stops, forks - exits is exactly the threads left in the namespace."""
    with tempfile.TemporaryDirectory() as tmp, exporter() as ours:
        stop = Path(tmp, "stop")
        loop = (
            f"while [ ! -e {stop} ]; do n=0; while [ $n -lt 40 ]; do (:); n=$((n + 1)); done; "
            "sleep 0.02; done; echo done > " + f"{tmp}/done; exec sleep 600"
        )
        with namespace(loop) as ino:
            key = str(ino)
            last = (0.0, 0.0)
            start = time.monotonic()
            scrapes = 0
            while time.monotonic() - start < 5 or scrapes < 5:
                text = ours.metrics()
                scrapes += 1
                forks = value(text, "pidns_namespace_forks_total", ns=key) or 0
                exits = value(text, "pidns_namespace_exits_total", ns=key) or 0
                assert forks >= last[0] and exits >= last[1]
                assert exits <= forks
                assert value(text, "pidns_export_event_overflows_total") == 0
                last = (forks, exits)
            rate = last[1] / (time.monotonic() - start)
            stop.touch()
            wait_for(lambda: Path(tmp, "done").exists(), 10, "the churn did not stop")
            time.sleep(0.3)

            def settled() -> bool:
                text = ours.metrics()
                forks = value(text, "pidns_namespace_forks_total", ns=key) or 0
                exits = value(text, "pidns_namespace_exits_total", ns=key) or 0
                return forks - exits == value(text, "pidns_namespace_threads", ns=key)

            wait_for(settled, 10, "forks - exits does not match the namespace's threads")
        print(f"churn: {rate:.0f} exits/s, {scrapes} scrapes")
        assert scrapes >= 5
        assert rate > 300, f"the churn ran at only {rate:.0f} exits/s"


# -- bad input --------------------------------------------------------------------------------


def run_export(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PIDNS, "export", *args], capture_output=True, text=True, timeout=timeout
    )


def one_error_line(done: subprocess.CompletedProcess[str], code: int, named: str) -> None:
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("pidns: warning")]
    assert len(lines) == 1 and lines[0].startswith("pidns: error: "), done.stderr
    assert named in lines[0]


def test_busy_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = run_export("--listen", f"127.0.0.1:{port}")
    one_error_line(done, 1, f"127.0.0.1:{port}")
    assert "in use" in done.stderr


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["--proc", "/no/such/dir"], 2, "/no/such/dir"),
        (["--proc", "/etc/hostname"], 2, "/etc/hostname"),
        (["--listen", "nonsense"], 2, "nonsense"),
        (["--listen", "127.0.0.1:99999"], 2, "99999"),
        (["--listen", "192.0.2.1:9717"], 2, "192.0.2.1"),
        (["--once"], 2, "--textfile"),
        (["--textfile", "/tmp/pidns.txt"], 2, ".prom"),
        (["--textfile", "/no/such/dir/x.prom"], 2, "/no/such/dir"),
        (["--min-interval", "-1"], 2, "--min-interval"),
    ],
)
def test_bad_input(args: list[str], code: int, named: str) -> None:
    if "--listen" not in args:
        args = [*args, "--listen", f"127.0.0.1:{free_port()}"]
    one_error_line(run_export(*args), code, named)


def test_a_directory_that_is_no_proc_tree() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        done = run_export("--proc", tmp, "--listen", f"127.0.0.1:{free_port()}")
    one_error_line(done, 2, tmp)
