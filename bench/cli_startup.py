"""Benchmark: wall time of `python -m orchestrator_core --json status` against one loopback host. Prints figures.

    python bench/cli_startup.py [--runs 15]

The stand-in host is an LM Studio-shaped server on 127.0.0.1 in this process (the CLI runs in its own
subprocess, so the two share no GIL). The database is migrated once and has the host's model registered,
as after the first start. Prints the median and the spread of the runs, their CPU time (on a busy
shared machine the wall time mostly waits for a core), the same for a bare interpreter
(`python -c pass`: the floor no CLI can go under), and the top import-time offenders of one run
(`python -X importtime`, self time summed per top-level package). Target: median within 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

REPO = Path(__file__).resolve().parent.parent
MODELS = json.dumps({"models": [
    {"type": "llm", "key": "bench-model", "display_name": "bench-model", "loaded_instances": [{"id": "bench-model"}]},
]}).encode()


class _Host(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = MODELS if self.path.startswith("/api/v1/models") else b'{"error": "not here"}'
        self.send_response(200 if body is MODELS else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


CPU: list[float] = []  # user + system seconds of each timed child: on a shared machine wall time waits for a core


def timed(command: list[str], env: dict[str, str], cwd: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def import_offenders(env: dict[str, str], cwd: str, top: int = 12) -> list[tuple[str, float]]:
    command = [sys.executable, "-X", "importtime", "-m", "orchestrator_core", "--json", "status"]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    totals: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            name = match.group(2)
            key = ".".join(name.split(".")[:2]) if name.startswith("orchestrator_core") else name.split(".")[0]
            totals[key] += int(match.group(1))
    return [(name, us / 1000) for name, us in totals.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    with tempfile.TemporaryDirectory() as folder:
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": folder,
               "DATABASE_URL": f"sqlite:///{folder}/bench.db", "LOCAL_HOSTS": "lmstudio",
               "LMSTUDIO_BASE_URL": f"http://{host}:{port}",
               # A Fernet key as is: a passphrase would add its scrypt stretch (~50 ms) to every start.
               "ORCHESTRATOR_SECRET_KEY": "aYrx9ucDmqez-nZZVBKDPq-WwztcQXsl2F8v6tRMVOE="}
        status = [sys.executable, "-m", "orchestrator_core", "--json", "status"]
        timed(status, env, folder)  # first start: migrates, writes .pyc files, registers the host's model
        bare = [statistics.median(timed([sys.executable, "-c", "pass"], env, folder) for _ in range(5))]
        times = []
        CPU.clear()
        for _ in range(runs):
            times.append(timed(status, env, folder))
        cpu = list(CPU)
        offenders = import_offenders(env, folder)
    server.shutdown()

    print(f"python -m orchestrator_core --json status, one loopback LM Studio host, {runs} runs:")
    print(f"  median {statistics.median(times):.3f} s   min {min(times):.3f} s   max {max(times):.3f} s   "
          f"(target 0.3 s; a bare `python -c pass` takes {bare[0]:.3f} s here)")
    print(f"  CPU (user + system) median {statistics.median(cpu):.3f} s: what the wall time is on an idle core; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("Import time of one run, self time per package (python -X importtime):")
    for name, ms in offenders:
        print(f"  {ms:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
