"""What the service does, without HTTP: generation, jobs, bulk, webhooks.

Raises domain errors, never HTTP ones; never imports web or Starlette.
"""
