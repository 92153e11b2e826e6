"""Training, below the train stage: the exact text the student is trained on (text.py), the recipe's numerics and
Trainer arguments (recipe.py), the per-GPU memory plan (memory_plan.py) and the torch extension cache
(extension_cache.py)."""
