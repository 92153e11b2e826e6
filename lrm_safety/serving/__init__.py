"""Served models: a model reference run as a vLLM OpenAI-compatible server, shared by every stage that needs it
(served.py: which servers a spec needs and how the stages reach them), sized from what it serves (sizing.py), and
started as a local subprocess by `lrm-safety run` (local.py)."""
