"""What every endpoint starts with: the app's services and the authenticated key."""
from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from appliance.apikeys import KeyGrant

if TYPE_CHECKING:
    from appliance.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def authorize(request: Request, scope: str | None) -> tuple[Services, KeyGrant]:
    """Authenticate, rate-limit and check ``scope``; raises the contract's errors."""
    services = services_of(request)
    return services, services.auth.authenticate(request, scope)


def actor(grant: KeyGrant) -> str:
    return f"key:{grant.id}"
