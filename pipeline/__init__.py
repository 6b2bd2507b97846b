"""The app over the library in components/: the KFP pipeline (pipeline, steps, step_inputs),
presets (config), where tasks and workers run (placement, launch, jobset_spec, jobset_run), the
local runner and its console (local_run, console), the KFP client (cluster) and the `cnnpipe`
command (cli).
"""
