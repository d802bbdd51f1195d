"""What the service does, without HTTP: the one generation path, jobs, bulk, webhooks, and
their typed wiring.

Raises domain errors (service.errors), never HTTP ones; never imports web or Starlette.
"""
