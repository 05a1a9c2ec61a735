"""Putting a trained run to use: ``hftk generate`` (``generation``), ``predict`` (``prediction``),
``eval`` (``evaluation``), ``chat`` and ``export``. ``hftk serve`` (serving/) builds on these.
"""
