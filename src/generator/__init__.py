"""The battery simulator: a fleet model, readings in the contract's schema, and an HTTP sender.

``battery_model`` knows physics and nothing about JSON; ``readings`` knows the schema and
nothing about HTTP; ``sender`` knows HTTP and nothing about batteries; ``simulator`` wires
them into the command line the contract describes.
"""
