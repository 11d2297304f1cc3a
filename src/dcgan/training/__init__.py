"""Training: the step (`step.py`), the loop (`loop.py`) and the run's state (`state.py`, `rundir.py`),
with the recipe parts they use (losses, augmentation, EMA, clusters).

Nothing is imported here, so that importing one part (the run directory, say) does not load the loop.
"""
