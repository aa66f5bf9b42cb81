"""What a run or a sweep shows a person (matplotlib, Agg).

curves   a training run's loss and accuracy curves (`plot_history`)
sweeps   a sweep's table, results files and plot
"""

__all__ = ["curves", "sweeps"]
