"""Decisions against another optimizer (a build of upstream's Go optimizer) on fresh systems.

Each system (`synthetic.py`: ``case`` or ``synthetic``, one per seed; 20/50/100/200 servers and
capacity scaled by 0.3/1/3/0.1 as the seed cycles) is written as the six upstream JSON files
with upstream's settings (``chunked`` service times, ``scaled`` batch size) by
`inferno.io.dump.write_system`, which Go's decoder reads as is. ``inferno optimize`` and the
peer (``--peer 'COMMAND {data} {out}'``) solve it; a server matches when accelerator, replicas
and max batch agree. Where they do not, the peer runs ``--repeats`` more times: upstream breaks
ties by Go's random map order, so a mismatch counts as a tie when the peer itself gives more
than one answer (and the report says whether ours is one of them).

Usage: python benchmarks/peer_parity.py --peer '/path/optimizer {data} {out}'
       [--kind case] [--seeds 200:296] [--repeats 12]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SIZES = (20, 50, 100, 200)
SCALES = (0.3, 1.0, 3.0, 0.1)


def _decisions(path: Path) -> dict[str, tuple]:
    allocs = json.loads(path.read_text())["allocations"]
    return {n: (a["accelerator"], a["numReplicas"], a["maxBatch"]) for n, a in allocs.items()}


def main() -> None:
    from synthetic import case_like_system, synthetic_system

    from inferno.io.dump import write_system
    from inferno.model import BatchPolicy, PerfModel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer", required=True, help="command with {data} and {out}")
    ap.add_argument("--kind", choices=("case", "synthetic"), default="case")
    ap.add_argument("--seeds", default="200:296", help="START:STOP")
    ap.add_argument("--repeats", type=int, default=12)
    args = ap.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    make = case_like_system if args.kind == "case" else synthetic_system
    tally = {"systems": 0, "identical": 0, "peer_ties": 0, "ours_among_peer": 0,
             "servers": 0, "servers_differing": 0}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for seed in range(start, stop):
            size, scale = SIZES[seed % 4], SCALES[(seed // 4) % 4]
            system = make(size, seed, capacity_scale=scale)
            system = replace(system, settings=replace(
                system.settings, perf_model=PerfModel.CHUNKED, batch_policy=BatchPolicy.SCALED))
            data = root / f"s{seed}"
            write_system(system, data)
            ours, peer = root / "ours.json", root / "peer.json"
            subprocess.run([sys.executable, "-c", "from inferno.cli import main; main()",
                            "optimize", str(data), "-o", str(ours)], check=True,
                           capture_output=True)
            cmd = shlex.split(args.peer.format(data=data, out=peer))
            subprocess.run(cmd, check=True, capture_output=True)
            mine, theirs = _decisions(ours), _decisions(peer)
            differing = [n for n in sorted(set(mine) | set(theirs))
                         if mine.get(n) != theirs.get(n)]
            tally["systems"] += 1
            tally["servers"] += size
            tally["servers_differing"] += len(differing)
            if not differing:
                tally["identical"] += 1
                continue
            answers = {tuple(sorted(theirs.items()))}
            for _ in range(args.repeats):
                subprocess.run(cmd, check=True, capture_output=True)
                answers.add(tuple(sorted(_decisions(peer).items())))
            among = tuple(sorted(mine.items())) in answers
            tally["peer_ties"] += len(answers) > 1
            tally["ours_among_peer"] += among
            print(f"seed {seed} ({size} servers, capacity x{scale}): {len(differing)} differ; "
                  f"peer gave {len(answers)} answer(s), ours among them: {among}", flush=True)
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
