"""Run-folder operations: what `fc-jax train`, `sweep` and `eval` do, callable without argv.

After flax's `train_and_evaluate(config, workdir)`: each operation takes settings and a folder,
checks everything before it creates anything, writes its files atomically and returns the summary
the command line prints; errors are exceptions (`ValueError`, `folders.Diverged`,
`folders.Interrupted`, `fc_jax.storage.files.WriteError`) that `fc_jax.cli.main` alone maps to
exit codes. This is the application tier beside `fc_jax.settings` (kept apart from it because the
command line's flags module imports the settings and needs none of this).

  folders     run folders: which can be one, the files in one, the `fc-jax train` command line;
              `Diverged`, `Interrupted`
  evaluation  the test accuracy of best params (`accuracy_on_test`), of a saved model
              (`evaluate_model`)
  training    one net into a run folder (`prepare_train`, `train_in`)
  sweeping    many configurations into a sweep folder (`trial_space`, `prepare_sweep`, `sweep_in`)
  optuna_study  the same with an Optuna sampler over lanes (`run_study`; imports Optuna then)
  winner      a sweep's winner: `best_config.json` and `retrain_best`

Import the modules (`from fc_jax.workdir import training`).
"""

__all__ = ["evaluation", "folders", "optuna_study", "sweeping", "training", "winner"]
