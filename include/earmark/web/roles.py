"""Who may do what on the Earmark pages, asked of Airflow's auth manager.

Every page needs a signed-in Airflow user who may see plugins (``AccessView.PLUGINS``): the day
page and the daily report. Beyond that, two capabilities, each a custom view of the auth
manager:

- ``Earmark Review``: claim, listen, read, decide (the review pages and the audio);
- ``Earmark Stats``: the stats page: each reviewer's counts and times, flag quality over any
  range of days, the suggested thresholds. (A day's report, open to every viewer, carries that
  day's flag quality per policy; nothing there is about a reviewer.)

With FAB (or Keycloak, or AWS) they are permissions an admin grants, for example
``airflow roles add-perms Reviewer -r "Earmark Review" -a can_read``. Airflow's simple auth
manager allows every custom view to every role, so for it the capabilities follow its roles:
``user`` and above review, ``op`` and above see the stats (``admin`` does everything).
"""

from __future__ import annotations

from typing import Any

REVIEW = "Earmark Review"
STATS = "Earmark Stats"
#: The lowest simple-auth-manager role holding each capability.
SIMPLE_AUTH_MANAGER_ROLES = {REVIEW: "USER", STATS: "OP"}


def allowed(user: Any, capability: str) -> bool:
    """Whether ``user`` (the request's Airflow user) holds ``capability``."""
    from airflow.api_fastapi.app import get_auth_manager  # noqa: PLC0415 - in the api-server
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import (  # noqa: PLC0415
        SimpleAuthManager,
        SimpleAuthManagerRole,
    )

    manager = get_auth_manager()
    if isinstance(manager, SimpleAuthManager):
        role = (getattr(user, "role", None) or "").upper()
        if role not in SimpleAuthManagerRole.__members__:
            return False
        lowest = SimpleAuthManagerRole[SIMPLE_AUTH_MANAGER_ROLES[capability]]
        return SimpleAuthManagerRole[role].order >= lowest.order
    return bool(
        manager.is_authorized_custom_view(method="GET", resource_name=capability, user=user)
    )
