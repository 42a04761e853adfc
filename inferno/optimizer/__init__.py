"""Optimizer: candidate allocations and the unlimited, greedy and MILP solvers."""

from inferno.optimizer.candidates import Candidate, compute_candidates
from inferno.optimizer.result import Solution, Status
from inferno.optimizer.solve import solve

__all__ = ["Candidate", "Solution", "Status", "compute_candidates", "solve"]
