"""Ingest and processing throughput, next to this machine's ceiling, in one run.

    python -m bench.ingest --events 200000 --runs 3

For each run it measures, on a fresh data directory:

- ceiling: orjson.loads of each batch payload plus appending its bytes to a file with one
  fsync per batch, in one thread. No validation, no identity, no database.
- http: a real ``headstart serve`` subprocess; a separate client process with several threads
  posts the same batches to /v1/batch over keep-alive connections. Events per second counted
  from the first request to the last 200 (every 200 means durably committed).
- end to end: from the first request until the processor has applied the last event.
- processor: the processor alone, replaying the finished log into empty state in this process.

It prints medians over the runs and writes them as JSON to bench/out/ingest.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

import orjson

from bench.workload import PLAN, messages
from headstart.datadir import DataDir
from headstart.log.sqlite_log import SQLiteEventLog
from headstart.plan.load import parse_plan
from headstart.processor.processor import Processor
from headstart.sources import SourceRegistry
from headstart.sqlite import connect
from headstart.state.store import StateStore
from headstart.timeutil import MICROS_PER_HOUR, SystemClock, to_iso

ADMIN_KEY = "bench-admin-key"


def build_payloads(count: int, batch: int) -> list[bytes]:
    start = SystemClock().now_us() - MICROS_PER_HOUR
    items = list(messages(count, start_us=start))
    sent_at = to_iso(SystemClock().now_us())
    return [
        orjson.dumps({"batch": items[i : i + batch], "sentAt": sent_at})
        for i in range(0, len(items), batch)
    ]


def ceiling(payloads: list[bytes], directory: Path) -> float:
    events = 0
    started = time.perf_counter()
    with open(directory / "ceiling.ndjson", "ab") as handle:
        for payload in payloads:
            events += len(orjson.loads(payload)["batch"])
            handle.write(payload)
            handle.write(b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    return events / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HEADSTART_ADMIN_KEY": ADMIN_KEY}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headstart.cli.main",
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def _send(port: int, key: str, payloads: list[bytes], threads: int, result: Any) -> None:
    """Client process: post every payload, ``threads`` connections at a time."""
    auth = "Basic " + b64encode(f"{key}:".encode()).decode()
    cursor = iter(range(len(payloads)))
    lock = threading.Lock()
    failures = []

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            while True:
                conn.request(
                    "POST",
                    "/v1/batch",
                    payloads[index],
                    {"Authorization": auth, "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    break
                if response.status != 503:
                    failures.append((response.status, body[:200]))
                    break
                time.sleep(float(response.getheader("Retry-After", "1")))

    started = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    result.put((started, time.perf_counter(), failures))


def processed(port: int) -> tuple[int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    status = json.loads(conn.getresponse().read())
    return int(status["processed"]), int(status["log_head"])


def http_run(payloads: list[bytes], events: int, directory: Path, threads: int) -> dict[str, float]:
    data_dir = DataDir.create(directory / "data")
    data_dir.plan_path.write_text(PLAN)
    _, key = SourceRegistry(connect(data_dir.log_path)).add("bench")
    port = free_port()
    server = start_server(data_dir.root, port)
    try:
        queue: Any = multiprocessing.get_context("spawn").Queue()
        client = multiprocessing.get_context("spawn").Process(
            target=_send, args=(port, key, payloads, threads, queue)
        )
        client.start()
        started, acked, failures = queue.get()
        client.join()
        if failures:
            raise RuntimeError(f"{len(failures)} batches failed, first: {failures[0]}")
        while True:
            done, head = processed(port)
            if head >= events and done >= head:
                break
            time.sleep(0.01)
        caught_up = time.perf_counter()
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {
        "http_events_per_s": events / (acked - started),
        "end_to_end_events_per_s": events / (caught_up - started),
    }


def processor_run(directory: Path) -> float:
    log = SQLiteEventLog(directory / "data" / "log.sqlite")
    state_path = directory / "replay-state.sqlite"
    store = StateStore(state_path)
    processor = Processor(log, store, None)
    processor.use_plan(parse_plan(PLAN))
    started = time.perf_counter()
    applied = processor.catch_up()
    elapsed = time.perf_counter() - started
    log.close()
    store.close()
    return applied / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--threads", type=int, default=8, help="client connections")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    payloads = build_payloads(args.events, args.batch)
    print(
        f"{args.events} events in {len(payloads)} batches of {args.batch}, "
        f"{sum(map(len, payloads)) / args.events:.0f} bytes per event",
        flush=True,
    )
    runs: list[dict[str, float]] = []
    for number in range(args.runs):
        directory = Path(tempfile.mkdtemp(prefix="headstart-bench-"))
        try:
            row = {"ceiling_events_per_s": ceiling(payloads, directory)}
            row.update(http_run(payloads, args.events, directory, args.threads))
            row["processor_events_per_s"] = processor_run(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        runs.append(row)
        print(
            f"run {number + 1}: " + ", ".join(f"{k}={v:,.0f}" for k, v in row.items()), flush=True
        )

    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print("median: " + ", ".join(f"{k}={v:,.0f}" for k, v in medians.items()))
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "ingest.json").write_bytes(
        orjson.dumps(
            {"args": vars(args), "runs": runs, "median": medians}, option=orjson.OPT_INDENT_2
        )
    )


if __name__ == "__main__":
    main()
