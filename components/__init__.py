"""Pipeline steps as plain Python functions: data prep, training, evaluation, report, storage, model zoo."""
