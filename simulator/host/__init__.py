"""The simulated acquirer host: FastAPI + uvicorn, state in SQLite.

See docs/protocol.md for the wire format. Start it with `pipos acquirer` or
`python -m simulator.host`; tests use :class:`HostServer` on 127.0.0.1 port 0.
"""

from __future__ import annotations

from .app import HostApp, create_app
from .decisions import ArqcResult, CryptogramVerifier, EmvCryptogramVerifier, IssuerKey, Rules
from .faults import Fault, FaultBoard
from .ledger import Store
from .server import HostServer, TlsConfig, serve
from .service import AcquirerHost, HostError

__all__ = [
    "AcquirerHost",
    "ArqcResult",
    "CryptogramVerifier",
    "EmvCryptogramVerifier",
    "Fault",
    "FaultBoard",
    "HostApp",
    "HostError",
    "HostServer",
    "IssuerKey",
    "Rules",
    "Store",
    "TlsConfig",
    "create_app",
    "serve",
]
