"""The closed loop in the twin: a scenario's workload, the controller under a policy, the
cluster twin, and what a run records and reports (`run.run_scenario`)."""
