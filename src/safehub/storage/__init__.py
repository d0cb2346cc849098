"""Storage toolkit shared by every store: one engine factory, one way to migrate.

The stores (inbox, router, audit ledger, vault, re-identification requests) keep their own
tables and revision scripts; how a database is opened, tuned and brought to the newest revision
is decided here once.
"""

from safehub.storage.engine import open_engine
from safehub.storage.migration import Migrations, upgrade

__all__ = ["Migrations", "open_engine", "upgrade"]
