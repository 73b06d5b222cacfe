"""MLflow: where runs are stored (store), what a run writes (log), what is read back (read), and
the descriptions a person reads in the UI (notes)."""
