"""Is the network there? One short probe per host before a long download starts.

urllib has one timeout for connecting and for each read (60 s in the dataset download of the evaluation harness,
right for a slow mirror mid-transfer), so on a dead network (packets dropped, not refused)
every attempt of every file waits it out. :func:`unreachable` resolves and connects to each
distinct host once, all hosts at once, with a short bound (``CONNECT_TIMEOUT`` seconds),
so an offline ``make reproduce-coco`` stops within seconds and can name every file it needs.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

__all__ = ["CONNECT_TIMEOUT", "unreachable"]

CONNECT_TIMEOUT = 10.0


def _probe(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


def unreachable(urls: Iterable[str], timeout: float = CONNECT_TIMEOUT) -> dict[str, str]:
    """``{host: reason}`` for each host of ``urls`` that cannot be resolved and connected to within ``timeout`` s.

    Hosts are probed in parallel; name resolution that hangs counts against the same bound,
    so the whole call takes at most about ``timeout`` seconds.
    """
    hosts: dict[str, tuple[str, int]] = {}
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname:
            hosts[parts.hostname] = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    if not hosts:
        return {}
    failed: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=len(hosts))
    try:
        futures = {name: pool.submit(_probe, host, port, timeout) for name, (host, port) in hosts.items()}
        for name, future in futures.items():
            try:
                future.result(timeout=timeout + 1.0)
            except socket.gaierror as exc:
                failed[name] = f"name resolution failed ({exc.strerror or exc})"
            except (FutureTimeout, TimeoutError):
                failed[name] = f"no answer within {timeout:g} s"
            except OSError as exc:
                failed[name] = f"{type(exc).__name__}: {exc.strerror or exc}"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a resolver stuck past the bound is not waited for
    return failed
