"""Readiness between disasters: scheduled read-only rounds, split-brain and drift alerts, what people see of them."""
