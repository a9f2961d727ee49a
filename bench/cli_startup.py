"""Benchmark: wall time of `python -m orchestrator_core --json status` against one loopback host. Prints figures.

    python bench/cli_startup.py [--runs 15] [--against /path/to/other/checkout]

The stand-in host is an LM Studio-shaped server on 127.0.0.1 in this process (the CLI runs in its own
subprocess, so the two share no GIL). The database is migrated once and has the host's model registered,
as after the first start. Prints the median and the spread of the runs, their CPU time (on a busy
shared machine the wall time mostly waits for a core), the same for a bare interpreter
(`python -c pass`: the floor no CLI can go under), and the top import-time offenders of one run
(`python -X importtime`, self time summed per top-level package), and which of the heavy packages the
command loaded. Target: median within 0.3 s.

``--against`` times another checkout of the project (e.g. main) on the same host, each run of one
followed by a run of the other, so both see the same load; each has its own database.
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


HEAVY = ("httpx", "httpcore", "h11", "anyio", "idna", "certifi", "cryptography", "sqlalchemy", "alembic")


def import_offenders(env: dict[str, str], cwd: str, top: int = 12) -> tuple[list[tuple[str, float]], list[str]]:
    command = [sys.executable, "-X", "importtime", "-m", "orchestrator_core", "--json", "status"]
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    totals: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            name = match.group(2)
            key = ".".join(name.split(".")[:2]) if name.startswith("orchestrator_core") else name.split(".")[0]
            totals[key] += int(match.group(1))
    return [(name, us / 1000) for name, us in totals.most_common(top)], [h for h in HEAVY if h in totals]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--against", type=Path, default=None, help="another checkout, timed interleaved")
    args = parser.parse_args()
    checkouts = {"this": REPO} | ({f"against {args.against}": args.against.resolve()} if args.against else {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Host)
    Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    with tempfile.TemporaryDirectory() as folder:
        envs = {name: _env(folder, str(i), root, f"http://{host}:{port}") for i, (name, root) in
                enumerate(checkouts.items())}
        status = [sys.executable, "-m", "orchestrator_core", "--json", "status"]
        for env in envs.values():
            timed(status, env, folder)  # first start: migrates, writes .pyc files, registers the host's model
        bare = statistics.median(timed([sys.executable, "-c", "pass"], envs["this"], folder) for _ in range(5))
        times: dict[str, list[float]] = {name: [] for name in envs}
        cpu: dict[str, list[float]] = {name: [] for name in envs}
        for _ in range(args.runs):
            for name, env in envs.items():
                CPU.clear()
                times[name].append(timed(status, env, folder))
                cpu[name].append(CPU[0])
        offenders = {name: import_offenders(env, folder) for name, env in envs.items()}
    server.shutdown()

    print(f"python -m orchestrator_core --json status, one loopback LM Studio host, {args.runs} runs"
          f"{' each, interleaved' if len(envs) > 1 else ''} (target 0.3 s; a bare `python -c pass` takes {bare:.3f} s):")
    for name in envs:
        t = times[name]
        print(f"  {name:<8} median {statistics.median(t):.3f} s   min {min(t):.3f} s   max {max(t):.3f} s   "
              f"CPU (user + system) median {statistics.median(cpu[name]):.3f} s")
    print(f"  CPU time is what the wall time is on an idle core; load average now {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    for name, (packages, heavy) in offenders.items():
        print(f"Import time of one run of {name}, self time per package (python -X importtime); "
              f"heavy packages loaded: {', '.join(heavy) or 'none'}")
        for package, ms in packages:
            print(f"  {ms:8.1f} ms  {package}")


def _env(folder: str, tag: str, root: Path, host_url: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(root), "HOME": folder,
            "DATABASE_URL": f"sqlite:///{folder}/bench{tag}.db", "LOCAL_HOSTS": "lmstudio",
            "LMSTUDIO_BASE_URL": host_url,
            # A Fernet key as is: a passphrase would add its scrypt stretch (~50 ms) to every start.
            "ORCHESTRATOR_SECRET_KEY": "aYrx9ucDmqez-nZZVBKDPq-WwztcQXsl2F8v6tRMVOE="}


if __name__ == "__main__":
    main()
