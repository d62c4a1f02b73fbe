"""Text renderers: the plan as ``failover-bot plan`` prints it, and the run's report."""
