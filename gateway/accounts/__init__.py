"""Customer accounts, their integrations and keys.

Other features use only what is exported here.
"""

from gateway.accounts.service import SCIM_PREFIX, tenant_url

__all__ = ["SCIM_PREFIX", "tenant_url"]
