"""Tenants: which tenant a transaction acts for (row-level security reads it)."""

from __future__ import annotations

import psycopg

TENANT_SETTING = "hybridsearch.tenant_id"
# Shared with hybridsearch.aio; parameters (TENANT_SETTING, tenant).
SET_TENANT_SQL = "SELECT set_config(%s, %s, true)"


def set_tenant(conn: psycopg.Connection, tenant: str | None) -> None:
    """Name the tenant for the current transaction only.

    Transaction-local (``set_config(..., true)``), so a tenant never outlives its
    transaction on a pooled connection. None leaves it unset: a role subject to the
    row-level security policies then sees nothing, and an owner sees every tenant.
    """
    if tenant is not None:
        conn.execute(SET_TENANT_SQL, (TENANT_SETTING, tenant))
