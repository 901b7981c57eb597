"""Providers behind one interface (see base.py); `make_provider` picks one from the settings."""
from __future__ import annotations

from skillbuild.providers.base import Provider, ProviderError


def make_provider(settings) -> Provider:
    """The configured provider; callers reach it through skillbuild.calls, which paces, caches and retries."""
    if settings.provider == "offline":
        from skillbuild.providers.offline import OfflineProvider

        return OfflineProvider()
    from skillbuild.providers import vertex  # imported only when used: the SDK is slow to load

    return vertex.build(settings)


__all__ = ["Provider", "ProviderError", "make_provider"]
