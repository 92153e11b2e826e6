"""Model references (refs.py: a hub id, a folder, s3://, a GGUF or builtin: -> a local folder) and model shapes
(shapes.py: parameter counts and sizes from a config, without weights)."""
