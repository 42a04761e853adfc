"""The SimPy digital twin: vLLM-like replicas, deployments and an accelerator cluster.

Imports `inferno` (data model, the shared iteration-time function) and SimPy; never `live` or
Kubernetes. Modules, bottom up:

- `request`: the per-request record and its timestamps.
- `kvcache`: paged KV-cache block arithmetic.
- `replica`: the iteration-level engine (continuous batching, chunked prefill, preemption,
  decode fast path).
- `router`, `deployment`, `cluster`: routing, replica lifecycle and rolling updates,
  accelerator pools, cost; the API a controller-facing twin builds on.
- `workload`, `trace`: arrival processes, token lengths, closed-loop users, trace replay.
- `metrics`, `promview`: pandas tables and the per-replica Prometheus view.
- `bench`, `validation`: `inferno sim bench` and the twin-vs-analyzer comparison.
"""
