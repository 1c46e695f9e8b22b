"""Tools for testing applications built on reliablelink: fault injection and ledgers.

* :class:`ChaosProxy`: a TCP proxy whose connections can be reset or blackholed.
* :class:`~reliablelink.transports.MemoryTransport` (``memory://``): in-process streams
  with reset, blackhole and clog controls, usable with ``trio.testing.MockClock``.
* :class:`LoadBalancer`: sends each connection to a random server node (for shared stores).
* :class:`Ledger`: checks that every message arrived exactly once and in order.
"""

from ..transports._memory import MemoryConnection as MemoryConnection
from ..transports._memory import MemoryTransport as MemoryTransport
from ._balancer import LoadBalancer as LoadBalancer
from ._ledger import Ledger as Ledger
from ._ledger import LedgerResult as LedgerResult
from ._ledger import number_of as number_of
from ._ledger import numbered as numbered
from ._proxy import ChaosProxy as ChaosProxy
from ._proxy import Toxics as Toxics
