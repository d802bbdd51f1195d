"""Store failures the web layer maps to HTTP statuses (both become 503)."""


class StoreFull(Exception):
    """A put would exceed the byte budget; live artifacts are never evicted to make room."""


class StoreUnavailable(Exception):
    """The backend cannot be reached (Redis down); callers fail fast instead of waiting."""
