"""What a run or a sweep shows a person (matplotlib, Agg).

curves   a training run's loss and accuracy curves (`plot_history`)
sweeps   a sweep's table, results files and plot
halving  would successive halving have stopped a full sweep's winner (a replay)
"""

__all__ = ["curves", "halving", "sweeps"]
