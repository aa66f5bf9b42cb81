"""Files on disk: written atomically, checked when read.

files       atomic writes and the folder lock (one process writes a folder at a time)
archive     the checked archive: named arrays + JSON meta + sha256, headers checked first
trees       pytrees as named arrays and back; `NetConfig` from a file's meta
checkpoint  the run loop's `Lanes` (and a run's `Run`) <-> the archive; resume is bit-exact
model       the model file: `save_model`, `load_model`, `predict_raw` (imports nothing of runs)
"""

__all__ = ["archive", "checkpoint", "files", "model", "trees"]
