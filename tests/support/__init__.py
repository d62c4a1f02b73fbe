"""Helpers shared by the test suite: the simulated platform on free loopback ports."""
