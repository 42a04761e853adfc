"""GuideLLM, a load generator nobody here wrote, against one emulated Deployment, offline.

GuideLLM is not a project dependency (it pulls torch and transformers, ~6 GB): install it in
its own environment and pass its executable, e.g. ``python3 -m venv /opt/guidellm &&
/opt/guidellm/bin/pip install guidellm``. It needs a Hugging Face tokenizer for its synthetic
prompts; to stay offline this script trains one first with GuideLLM's own dependencies (a
byte-level BPE of 2,000 tokens on Faker text, ~4.3 characters per token, close to the
emulator's 4-characters-per-token prompt estimate) and passes its directory.

The server is ``inferno emulate --openai-port`` following the tests' Kubernetes API emulator
(`emulated.EmulatedDeployment`: llama_13b on G2, max batch 256, speed-up 1). For each
concurrency, GuideLLM runs its ``concurrent`` profile on /v1/completions for SECONDS with
synthetic prompts of PROMPT_TOKENS and OUTPUT_TOKENS (GuideLLM sends ``ignore_eos``). The
pod's histograms are read before and after the run (once the requests GuideLLM cancels at its
deadline have been aborted), so the server's means cover exactly that run's requests: TTFT
over every request that had a first token, TPOT over the completed ones; GuideLLM's means are
over its successful requests. GuideLLM's ITL is vLLM's TPOT
(decode time per output token after the first); its TTFT starts in its worker process, before
the request is written.

Usage: python benchmarks/guidellm_bench.py --guidellm /opt/guidellm/bin/guidellm
       [--streams 16 64 200] [--seconds 60] [--prompt-tokens 256] [--output-tokens 128]
       [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from emulated import EmulatedDeployment

MODEL, ACC, MAX_BATCH = "llama_13b", "G2", 256
TTFT, TPOT = "vllm:time_to_first_token_seconds", "vllm:request_time_per_output_token_seconds"

TOKENIZER = '''
import sys
from faker import Faker
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

fake = Faker()
fake.seed_instance(0)
corpus = [fake.paragraph(nb_sentences=8) for _ in range(20000)]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(corpus, trainers.BpeTrainer(
    vocab_size=2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    special_tokens=["<eos>"]))
PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(sys.argv[1])
'''


def make_tokenizer(guidellm: Path, path: Path) -> Path:
    """Train and save the offline tokenizer with the Python of GuideLLM's environment."""
    python = guidellm.parent / "python"
    subprocess.run([str(python), "-c", TOKENIZER, str(path)], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True)
    return path


def histogram_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    out = {}
    for key, name in (("ttft_ms", TTFT), ("tpot_ms", TPOT)):
        count = after[name + "_count"] - before[name + "_count"]
        out[key] = (after[name + "_sum"] - before[name + "_sum"]) / count * 1e3
        out[key.replace("_ms", "_n")] = count
    return out


def idle(server: EmulatedDeployment, timeout_s: float = 300.0) -> dict[str, float]:
    """The pod's metrics once nothing runs or waits (cancelled requests aborted)."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = server.metrics()
        if (metrics["vllm:num_requests_running"] == metrics["vllm:num_requests_waiting"] == 0
                or time.monotonic() > deadline):
            return metrics
        time.sleep(0.5)


def run(guidellm: Path, streams: list[int], seconds: float, prompt_tokens: int,
        output_tokens: int) -> list[dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="inferno-guidellm-"))
    tokenizer = make_tokenizer(guidellm, work / "tokenizer")
    rows = []
    with EmulatedDeployment(model=MODEL, accelerator=ACC, max_batch=MAX_BATCH) as server:
        for n in streams:
            before = idle(server)
            report = work / f"guidellm-{n}.json"
            subprocess.run(
                [str(guidellm), "run", "--disable-console-interactive",
                 "--backend", f"kind=openai_http,target={server.target},"
                 "request_format=/v1/completions",
                 "--profile", f"kind=concurrent,streams={n}",
                 "--data", f"kind=synthetic_text,prompt_tokens={prompt_tokens},"
                 f"output_tokens={output_tokens}",
                 "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
                 "--constraint", f"kind=max_duration,seconds={seconds:g}",
                 "--output", f"kind=json,path={report}"],
                check=True, capture_output=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
            pod = histogram_means(before, idle(server))
            metrics = json.loads(report.read_text())["benchmarks"][0]["metrics"]
            totals = metrics["request_totals"]
            row = {"streams": n, "successful": totals["successful"],
                   "incomplete": totals["incomplete"] + totals["errored"],
                   "guidellm_ttft_ms": metrics["time_to_first_token_ms"]["successful"]["mean"],
                   "guidellm_itl_ms": metrics["inter_token_latency_ms"]["successful"]["mean"],
                   **pod}
            row["itl_ratio"] = row["guidellm_itl_ms"] / row["tpot_ms"]
            row["ttft_ratio"] = row["guidellm_ttft_ms"] / row["ttft_ms"]
            rows.append(row)
            print(row, flush=True)
    return rows


def table(rows: list[dict[str, float]], seconds: float, prompt_tokens: int,
          output_tokens: int) -> str:
    cols = [("streams", "streams", "{:.0f}"), ("successful", "GuideLLM requests", "{:.0f}"),
            ("incomplete", "cancelled at the end", "{:.0f}"),
            ("guidellm_itl_ms", "GuideLLM ITL (ms)", "{:.2f}"),
            ("tpot_ms", "pod TPOT (ms)", "{:.2f}"), ("itl_ratio", "ratio", "{:.4f}"),
            ("guidellm_ttft_ms", "GuideLLM TTFT (ms)", "{:.0f}"),
            ("ttft_ms", "pod TTFT (ms)", "{:.0f}"), ("ttft_ratio", "ratio", "{:.3f}")]
    lines = [f"GuideLLM concurrent profile, {seconds:g} s per concurrency, synthetic prompts "
             f"of {prompt_tokens} tokens, {output_tokens} output tokens", "",
             "| " + " | ".join(c[1] for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |"
              for row in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guidellm", type=Path, default=shutil.which("guidellm"),
                    help="The guidellm executable (default: on PATH).")
    ap.add_argument("--streams", type=int, nargs="+", default=[16, 64, 200])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    if args.guidellm is None:
        ap.error("guidellm not found: pass --guidellm PATH")
    rows = run(args.guidellm, args.streams, args.seconds, args.prompt_tokens,
               args.output_tokens)
    text = table(rows, args.seconds, args.prompt_tokens, args.output_tokens)
    machine = (f"{platform.python_implementation()} {platform.python_version()}, "
               f"{os.cpu_count()} CPUs, {platform.machine()}, load average "
               f"{os.getloadavg()[0]:.1f}")
    print(text + f"\n\n{machine}")
    if args.output is not None:
        args.output.write_text(text + f"\n\nMachine: {machine}.\n", encoding="utf-8")


if __name__ == "__main__":
    main()
