"""imagegen: models and device work. Knows nothing of HTTP or storage."""

from imagegen import offline as _offline  # noqa: F401  (runs before diffusers is imported)
