"""200 concurrent streaming clients on one emulated Deployment, against the twin's prediction.

Set-up, all on 127.0.0.1: the tests' Kubernetes API emulator (kmock) holds one managed
Deployment (llama_13b on G2, max batch label 256, no synthetic load); ``inferno emulate
--openai-port`` runs as a process following it (speed-up 1). USERS closed-loop users (default
200) stream completions from this process with ``ignore_eos`` and an explicit ``prompt_tokens``:
each user draws its lengths from its own seeded stream (prompt uniform in [64, 512] tokens,
output uniform in [32, 256]). Requests sent after a warm-up are measured until the end of the
run; a user finishes its request in flight after the end.

The twin's prediction for that load is the mean of REPLICATIONS offline runs of the same
Deployment (same model, accelerator, max batch and engine settings) with the same number of
closed-loop users of zero think time and the same length distribution
(`sim.workload.ClosedLoop`, no HTTP, no wall clock), over the same window, with independent
length draws; their standard deviation is the noise of a single run, which the client's run
has too. Client ITL is vLLM's: per request (last token - first token) / (tokens - 1), averaged
over requests; the server's own TPOT histogram (the pod's ``/metrics``, warm-up included) is
a second reference. The server's peak RSS (VmHWM) and CPU time come from /proc; the client's
CPU time from `time.process_time`. Everything shares the machine's cores.

Usage: python benchmarks/openai_bench.py [--users 200] [--seconds 60] [--warmup 15]
       [--seeds 0 1 2] [--client aiohttp|openai] [--replications 10] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import simpy
from emulated import SMALL, EmulatedDeployment

from inferno.io import load_static_data
from sim.cluster import Cluster
from sim.deployment import DeploymentSpec
from sim.workload import ClosedLoop, Lengths, RequestFactory, TokenDist

MODEL, ACC, MAX_BATCH = "llama_13b", "G2", 256
PROMPT = TokenDist(kind="uniform", low=64, high=512)
OUTPUT = TokenDist(kind="uniform", low=32, high=256)


@dataclass(frozen=True, slots=True)
class Sample:
    sent_s: float
    ttft_s: float
    itl_s: float
    tokens: int


async def user(session: aiohttp.ClientSession, url: str, rng: np.random.Generator,
               until_s: float, samples: list[Sample]) -> None:
    """One closed-loop user over raw aiohttp (SSE lines, one JSON chunk per token)."""
    while time.monotonic() < until_s:
        n_in, n_out = int(PROMPT.sample(rng, 1)[0]), int(OUTPUT.sample(rng, 1)[0])
        body = {"model": MODEL, "prompt": "x", "prompt_tokens": n_in, "max_tokens": n_out,
                "ignore_eos": True, "stream": True}
        sent = time.monotonic()
        times = []
        async with session.post(url + "/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.content:
                if line.startswith(b"data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["text"]:
                        times.append(time.monotonic())
        samples.append(Sample(sent, times[0] - sent,
                              (times[-1] - times[0]) / (len(times) - 1), len(times)))


async def openai_user(client: object, url: str, rng: np.random.Generator, until_s: float,
                      samples: list[Sample]) -> None:
    """One closed-loop user through the `openai` package (AsyncOpenAI)."""
    while time.monotonic() < until_s:
        n_in, n_out = int(PROMPT.sample(rng, 1)[0]), int(OUTPUT.sample(rng, 1)[0])
        sent = time.monotonic()
        stream = await client.completions.create(  # type: ignore[attr-defined]
            model=MODEL, prompt="x", max_tokens=n_out, stream=True,
            extra_body={"ignore_eos": True, "prompt_tokens": n_in})
        times = [time.monotonic() async for c in stream if c.choices and c.choices[0].text]
        samples.append(Sample(sent, times[0] - sent,
                              (times[-1] - times[0]) / (len(times) - 1), len(times)))


async def drive(url: str, users: int, seconds: float, seed: int, client: str
                ) -> list[Sample]:
    samples: list[Sample] = []
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(users)]
    until = time.monotonic() + seconds
    if client == "openai":
        import openai

        async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0,
                                      timeout=600.0) as oc:
            await oc.models.list()
            await asyncio.gather(*(openai_user(oc, url, r, until, samples) for r in rngs))
    else:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=600.0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(user(session, url, r, until, samples) for r in rngs))
    return samples


def predicted(users: int, seconds: float, warmup_s: float, seed: int, replications: int
              ) -> dict[str, float]:
    """The twin alone: `users` closed-loop users on the same Deployment, simulated
    `replications` times with independent lengths; the mean and the spread of one run."""
    system = load_static_data(SMALL)
    itl, ttft = [], []
    for child in np.random.SeedSequence(seed).spawn(replications):
        env = simpy.Environment()
        cluster_seed, lengths_seed = child.spawn(2)
        cluster = Cluster(env, system, seed=cluster_seed, sample_period_s=None)
        dep = cluster.add_deployment(DeploymentSpec(name="bench/llama", model=MODEL,
                                                    accelerator=ACC, max_batch=MAX_BATCH))
        lengths = Lengths(input=PROMPT, output=OUTPUT).pairs(np.random.default_rng(lengths_seed))
        ClosedLoop(env, users, lengths, dep.submit, RequestFactory(), until_s=seconds).start()
        env.run()
        done = [r for r in dep.requests if r.arrival_s >= warmup_s]
        itl.append(np.mean([r.itl_s for r in done]))
        ttft.append(np.mean([r.ttft_s for r in done]))
    return {"itl_s": float(np.mean(itl)), "itl_sd_s": float(np.std(itl, ddof=1)),
            "ttft_s": float(np.mean(ttft))}


def run(users: int, seconds: float, warmup_s: float, seed: int, client: str,
        replications: int) -> dict[str, float]:
    with EmulatedDeployment(model=MODEL, accelerator=ACC, max_batch=MAX_BATCH, seed=seed,
                            max_requests=max(512, 2 * users)) as server:
        _, cpu0 = server.proc_stats()
        client_cpu0 = time.process_time()
        started = time.monotonic()
        samples = asyncio.run(drive(server.target + "/v1", users, seconds, seed, client))
        wall_s = time.monotonic() - started
        client_cpu = time.process_time() - client_cpu0
        rss_mib, cpu1 = server.proc_stats()
        pod = server.metrics()
    measured = [s for s in samples if s.sent_s >= started + warmup_s]
    twin = predicted(users, seconds, warmup_s, seed, replications)
    client_itl = float(np.mean([s.itl_s for s in measured]))
    tpot = "vllm:request_time_per_output_token_seconds"
    return {"seed": seed, "requests": len(measured), "client_itl_ms": client_itl * 1e3,
            "twin_itl_ms": twin["itl_s"] * 1e3, "twin_itl_sd_ms": twin["itl_sd_s"] * 1e3,
            "itl_ratio": client_itl / twin["itl_s"],
            "server_tpot_ms": pod[tpot + "_sum"] / pod[tpot + "_count"] * 1e3,
            "client_ttft_ms": float(np.mean([s.ttft_s for s in measured])) * 1e3,
            "twin_ttft_ms": twin["ttft_s"] * 1e3,
            "tokens_per_s": sum(s.tokens for s in samples) / wall_s,
            "server_rss_mib": rss_mib, "server_cpu_s": cpu1 - cpu0,
            "client_cpu_s": client_cpu, "wall_s": wall_s}


def table(rows: list[dict[str, float]], users: int, client: str) -> str:
    cols = [("seed", "seed", "{:.0f}"), ("requests", "requests", "{:.0f}"),
            ("client_itl_ms", "client ITL (ms)", "{:.2f}"),
            ("twin_itl_ms", "twin ITL (ms)", "{:.2f}"),
            ("twin_itl_sd_ms", "twin ITL sd of one run (ms)", "{:.2f}"),
            ("itl_ratio", "ratio", "{:.4f}"),
            ("server_tpot_ms", "pod TPOT (ms)", "{:.2f}"),
            ("client_ttft_ms", "client TTFT (ms)", "{:.0f}"),
            ("twin_ttft_ms", "twin TTFT (ms)", "{:.0f}"),
            ("tokens_per_s", "tokens/s", "{:.0f}"),
            ("server_rss_mib", "server peak RSS (MiB)", "{:.0f}"),
            ("server_cpu_s", "server CPU (s)", "{:.1f}"),
            ("client_cpu_s", "client CPU (s)", "{:.1f}"), ("wall_s", "wall (s)", "{:.0f}")]
    lines = [f"{users} streaming users, client: {client}", "",
             "| " + " | ".join(c[1] for c in cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |"
              for row in rows]
    ratios = [r["itl_ratio"] for r in rows]
    lines.append("")
    lines.append(f"ITL ratio client/twin: median {statistics.median(ratios):.4f}, range "
                 f"{min(ratios):.4f}–{max(ratios):.4f}; server peak RSS max "
                 f"{max(r['server_rss_mib'] for r in rows):.0f} MiB.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0,
                    help="Requests sent in the first WARMUP s are not measured.")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--client", choices=["aiohttp", "openai"], default="aiohttp")
    ap.add_argument("--replications", type=int, default=10,
                    help="Offline twin runs averaged into the prediction.")
    ap.add_argument("--output", type=Path, default=None,
                    help="Also write the table (with the machine) to this markdown file.")
    args = ap.parse_args()
    rows = [run(args.users, args.seconds, args.warmup, seed, args.client, args.replications)
            for seed in args.seeds]
    text = table(rows, args.users, args.client)
    machine = (f"{platform.python_implementation()} {platform.python_version()}, "
               f"{os.cpu_count()} CPUs, {platform.machine()}, load average "
               f"{os.getloadavg()[0]:.1f}")
    print(text)
    print(f"\n{machine}; targets: ITL ratio within 0.90–1.10, server RSS < 1024 MiB")
    print(f"client peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
          f"MiB")
    if args.output is not None:
        args.output.write_text(text + f"\n\nMachine: {machine}.\n", encoding="utf-8")


if __name__ == "__main__":
    main()
