"""Where the tests find the repository and the shared folder beside it (the spec, the example config, the KB).

The one definition of these paths: every test imports them from here (tests/test_sandbox_structure.py checks).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (or a worktree of it)
SHARED = ROOT.parent / "shared"  # beside the repository: ../shared
SPEC = SHARED / "spec"
EXAMPLE_CONFIG = SPEC / "example-config.yml"
KB_FILE = SHARED / "reference" / "redstor-failover-failback-kb.txt"
