"""The domain: aggregates, events, value objects (pure).

The aggregate modules are imported here so that ``domain.catalogue`` sees every event type
whichever domain module is loaded first.
"""

from domain import (
    agents,
    billing,
    calls,
    phone_numbers,
    provider_accounts,
    refused_calls,
    sip_trunks,
    webhooks,
)

__all__ = [
    "agents",
    "billing",
    "calls",
    "phone_numbers",
    "provider_accounts",
    "refused_calls",
    "sip_trunks",
    "webhooks",
]
