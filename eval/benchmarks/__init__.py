"""Benchmarks registered in :mod:`mico_chat.eval.registry`."""
