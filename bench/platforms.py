"""Platform configurations for the benchmarks: the example platform, or N StorageServers per site.

Every WinRM endpoint gets its own free port on 127.0.0.1, so a benchmark never collides with a running
demo or test. ``write_platform(directory, n)`` keeps every setting of ``example-config.yml`` except the
hosts: site-a gets ``as-a`` and StorageServers ``ss-a1..ss-aN``; site-b gets ``as-b`` and MirrorServers
``ms-b1..ms-bN``, ``ss-ai`` mirrored by ``ms-bi``. ``n=None`` writes the example platform itself.

Usage (prints the path): ``.venv/bin/python bench/platforms.py DIR [N]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.platform import EXAMPLE_CONFIG, free_port, write_config  # noqa: E402


def _ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports."""
    used: list[int] = []
    seen: set[int] = set()
    for _ in range(count * 20):
        if len(used) == count:
            break
        port = free_port()
        if port not in seen:
            seen.add(port)
            used.append(port)
    if len(used) < count:
        raise RuntimeError(f"could not find {count} free loopback ports")
    return used


def _address(site: int, index: int) -> str:
    """A Console address per host: 127.<10 * site>.<index // 200>.<index % 200 + 20> (never bound)."""
    return f"127.{10 * site}.{index // 200}.{index % 200 + 20}"


def platform_dict(n: int) -> dict[str, Any]:
    """The example configuration with ``n`` StorageServers at site-a mirrored by ``n`` at site-b."""
    if n < 1:
        raise ValueError("a platform needs at least one StorageServer per site")
    raw: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    ports = iter(_ports(2 * n + 2))

    def url() -> str:
        return f"http://127.0.0.1:{next(ports)}/wsman"

    site_a = raw["sites"]["site-a"]
    site_b = raw["sites"]["site-b"]
    site_a["account_server"]["winrm"] = url()
    site_b["account_server"]["winrm"] = url()
    site_a["storage_servers"] = [
        {"name": f"ss-a{i}", "address": _address(1, i), "port": 443, "winrm": url(), "mirror": f"ms-b{i}"}
        for i in range(1, n + 1)
    ]
    site_b["storage_servers"] = [
        {"name": f"ms-b{i}", "address": _address(2, i), "port": 443, "winrm": url()} for i in range(1, n + 1)
    ]
    return raw


def write_platform(directory: Path, n: int | None = None) -> Path:
    """Write ``failover.yml`` into ``directory``: the example platform (``n=None``) or ``n`` per site."""
    if n is None:
        return write_config(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "failover.yml"
    path.write_text(yaml.safe_dump(platform_dict(n), sort_keys=False), encoding="utf-8")
    return path


def site_hosts(config_path: Path, site: str) -> list[str]:
    """The names of ``site``'s hosts (its AccountServer first)."""
    raw = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    s = raw["sites"][site]
    return [s["account_server"]["name"], *(h["name"] for h in s.get("storage_servers", []))]


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: platforms.py DIR [N]", file=sys.stderr)
        return 2
    n = int(argv[1]) if len(argv) == 2 else None
    print(write_platform(Path(argv[0]), n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
