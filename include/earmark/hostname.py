"""The host name Airflow records for a task: ``[core] hostname_callable``.

Set ``AIRFLOW__CORE__HOSTNAME_CALLABLE=earmark.hostname.node_name`` on every host. A process with
``EARMARK_HOSTNAME`` set reports that name (two workers on one machine, or a worker behind NAT,
stay distinguishable in ``task_instance.hostname`` and in the UI's log links); without it, the
fully-qualified domain name, as Airflow does by default.
"""

from __future__ import annotations

import os
import socket


def node_name() -> str:
    """``EARMARK_HOSTNAME`` when set and non-empty, else the FQDN."""
    return os.environ.get("EARMARK_HOSTNAME", "").strip() or socket.getfqdn()
