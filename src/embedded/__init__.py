"""The embedded stack: moto's server, the receiver and the consumers as processes on loopback.

What ``make demo``, ``load_test.py --embedded`` and the integration tests stand on; each
service runs with the contract's command, configured only through its environment.
"""
