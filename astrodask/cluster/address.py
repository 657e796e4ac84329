"""A running scheduler by address: a bounded Dask handshake before the client, TLS checks, one-line errors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import time

from ..errors import AstrodaskError
from .config import ClusterConfig, check_address, scheme_of
from .workers import wait_for_workers


def connect_address(cfg: ClusterConfig, address: str, stack: contextlib.ExitStack):
    from distributed import Client

    check_address(address)  # also when it came from DASK_SCHEDULER_ADDRESS
    security = cfg.security()
    check_tls(address, security)
    if scheme_of(address) in ("tcp", "tls", "ws", "wss"):
        probe_scheduler(address, security, cfg.timeout)
    try:
        client = Client(address, security=security, timeout=cfg.timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(address, exc) from None
    stack.callback(client.close)
    wait_for_workers(client, 1, cfg.worker_timeout, lambda have: (
        f"no Dask worker joined the scheduler at {address} within {cfg.worker_timeout:g} s; start workers "
        f"(dask worker {address}) or give them longer with --worker-timeout"))
    return client, address


def _unreachable(address: str, exc: BaseException) -> AstrodaskError:
    detail = re.sub(r"^in <[^>]*>: ", "", " ".join(str(exc).split())) or "no answer"  # distributed's comm prefix
    return AstrodaskError(
        f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {detail}); "
        "check that it is running and the address, and pass --tls-ca/--tls-cert/--tls-key for tls://"
    )


def probe_scheduler(address: str, security, timeout: float) -> dict:
    """Connect, do the Dask handshake and ask the peer who it is, all within ``timeout`` seconds.

    ``Client(address, timeout=...)`` bounds only the TCP connect: the Dask handshake that follows has no timeout
    (on purpose, says distributed.comm.core.connect), so an address that accepts connections but is not a Dask
    server, e.g. the dashboard's port, hangs it for ever. This probe owns its comm and closes it whatever happens.
    """
    from distributed.security import Security

    args = (security or Security()).get_connection_args("client")
    state = {"connected": False}

    async def identity():
        from distributed.comm import parse_address
        from distributed.comm.core import FatalCommClosedError
        from distributed.comm.registry import get_backend

        scheme, loc = parse_address(address)
        connector = get_backend(scheme).get_connector()
        deadline = time.monotonic() + timeout
        while True:  # like distributed: retry a refused connection until the deadline (a scheduler starting up)
            try:
                comm = await asyncio.wait_for(connector.connect(loc, deserialize=True, **args),
                                              max(0.01, deadline - time.monotonic()))
                break
            except FatalCommClosedError:  # e.g. a TLS certificate refused: retrying cannot help
                raise
            except OSError:
                if time.monotonic() + 0.2 >= deadline:
                    raise
                await asyncio.sleep(0.2)
        state["connected"] = True
        try:
            local = comm.handshake_info()
            await comm.write(local)
            remote = await comm.read()
            comm.handshake_options = comm.handshake_configuration(local, remote)
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded():
        return await asyncio.wait_for(identity(), timeout)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="astrodask-probe") as pool:
        try:  # a thread of its own: connect() may be called from code that runs an event loop
            reply = pool.submit(asyncio.run, bounded()).result()
        except TimeoutError as exc:
            if not state["connected"]:
                raise _unreachable(address, TimeoutError(f"no connection within {timeout:g} s")) from None
            raise AstrodaskError(
                f"{address} accepted the connection but did not answer as a Dask scheduler within {timeout:g} s "
                "(is it the dashboard's port, 8787 by default?); pass the scheduler's address (tcp://host:8786 by "
                "default, printed by `dask scheduler`)") from exc
        except OSError as exc:
            raise _unreachable(address, exc) from None
        except Exception as exc:  # noqa: BLE001 - the peer sent something that is not Dask's protocol
            raise AstrodaskError(
                f"{address} is not a Dask scheduler (its answer was not the Dask protocol: {type(exc).__name__}); "
                "pass the scheduler's address (tcp://host:8786 by default, printed by `dask scheduler`)") from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind in ("Worker", "Nanny") or not isinstance(reply, dict):  # a Scheduler subclass has another type name
        raise AstrodaskError(f"{address} is a Dask {kind or 'server'}, not a scheduler; pass the scheduler's address "
                             "(tcp://host:8786 by default, printed by `dask scheduler`)")
    return reply


def check_tls(address: str, security) -> None:
    """Refuse in one line the address/TLS mismatches that distributed reports with a TypeError or
    RuntimeError (and then a 60 s hang while the half-made client closes)."""
    tls_address = address.strip().lower().startswith("tls://")
    if tls_address and security is None:
        from distributed.security import Security

        if Security().get_connection_args("client").get("ssl_context") is None:  # nor in the Dask config
            raise AstrodaskError(
                f"{address} is a TLS scheduler and no certificates were given; pass --tls-ca, --tls-cert and "
                "--tls-key (the cluster's CA certificate and this client's certificate and key)"
            )
    if security is not None and not tls_address:
        raise AstrodaskError(
            f"--tls-ca/--tls-cert/--tls-key were given but the scheduler address {address} is not tls://; "
            "use the tls:// address of the scheduler, or leave out the TLS options"
        )
