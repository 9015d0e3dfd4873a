"""Load testing: many requests at once, level after level, measured without perturbing.

``profiles`` plans the levels and their arrival schedules, ``runner`` sends one level's
requests on one event loop (``selfcheck`` records what the client itself cost), ``workers``
spreads a level over several processes, ``prompts`` builds what is sent, ``server_metrics``
scrapes the engine's own counters, and ``phase`` runs it all as one phase of a run.
"""
