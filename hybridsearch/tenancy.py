"""Tenants: which tenant a transaction acts for (row-level security reads it).

:func:`hybridsearch.db.store.set_tenant` names the tenant with :data:`SET_TENANT_SQL`,
transaction-local (``set_config(..., true)``), so a tenant never outlives its transaction
on a pooled connection. A tenant of None leaves it unset: a role subject to the row-level
security policies then sees nothing, and an owner sees every tenant.
"""

from __future__ import annotations

TENANT_SETTING = "hybridsearch.tenant_id"
# Parameters: (TENANT_SETTING, tenant).
SET_TENANT_SQL = "SELECT set_config(%s, %s, true)"
