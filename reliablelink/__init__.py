"""reliablelink: message sessions for Trio that survive network faults.

An ordered, exactly-once, two-way stream of messages over TCP (and other transports) that
outlives its connections: a pulled cable makes ``send`` and ``receive`` wait, never lose,
repeat or reorder a message.
"""

import logging as _logging

from . import metrics as metrics
from ._client import connect as connect
from ._errors import AuthenticationError as AuthenticationError
from ._errors import ConnectionFailed as ConnectionFailed
from ._errors import MessageTooLarge as MessageTooLarge
from ._errors import ProtocolError as ProtocolError
from ._errors import ReliableLinkError as ReliableLinkError
from ._errors import SessionClosed as SessionClosed
from ._errors import SessionExpired as SessionExpired
from ._errors import SessionMoved as SessionMoved
from ._keys import generate_key as generate_key
from ._keys import load_key_file as load_key_file
from ._keys import parse_key as parse_key
from ._options import Backoff as Backoff
from ._options import ConnectOptions as ConnectOptions
from ._options import ServeOptions as ServeOptions
from ._server import Server as Server
from ._server import serve as serve
from ._session import ClosedByPeer as ClosedByPeer
from ._session import ClosedLocally as ClosedLocally
from ._session import LinkState as LinkState
from ._session import Session as Session
from ._session import SessionStats as SessionStats
from .stores import StoreError as StoreError
from .stores import StoreFenced as StoreFenced

__version__ = "0.1.0"

# A library adds no handler of its own: without logging configured, nothing is printed.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
