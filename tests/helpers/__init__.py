"""Helpers shared by the tests (and two benches): tiny models and tokenizers, generated data,
stub servers, media samples, and the subprocess training runner.

Importable as ``helpers`` because pyproject's pytest config puts ``tests/`` on the path
(``pythonpath``); outside pytest, run with ``PYTHONPATH=tests`` (``make bench`` does).
"""
