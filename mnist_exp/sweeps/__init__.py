"""Many runs: sweep bookkeeping under one parent run, the Optuna search (sweeper, space,
search), statistics over repeats and paired comparison of two runs."""
