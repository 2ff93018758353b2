"""Driving a pipeline and proving what it stored: ``load_test.py`` and ``make demo``.

``sender`` sends readings on a fixed schedule (``fast_http`` is its client), ``disk_index``
finds every accepted reading on disk by natural key, ``run`` builds the contract's report,
``latency_plot`` draws it, and ``demo`` runs the simulator through an embedded stack.
"""
