"""`lmtune tune`: an Optuna study over the run config, each trial a training process run by an executor."""
