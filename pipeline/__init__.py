"""The Kubeflow pipeline: DAG, presets, cluster client and the `cnnpipe` command."""
