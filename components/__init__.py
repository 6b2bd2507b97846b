"""The library: each pipeline step as plain Python over paths and values, no KFP.

Data prep (data_prep, sources/, manifest) writes a dataset the reader (dataset, input_pipeline)
streams; training (train, model_assembly, fit, with callbacks, checkpoints, distributed, and
workers and train_worker for several processes) writes a model and its TrainResult (results);
evaluate, report/, publish and registry (with significance, the paired test that promotion
uses) follow. storage/, atomic, artifacts, checks, errors, formatting, processes, progress,
records and resources are shared by all. Nothing here imports `pipeline`;
tests/test_structure.py checks it.
"""
