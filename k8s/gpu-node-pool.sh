#!/usr/bin/env bash
# Creates the GKE GPU node pool that `cnnpipe compile` places train and evaluate on.
#
#   CLUSTER=my-cluster LOCATION=us-central1 bash k8s/gpu-node-pool.sh
#   CLUSTER=my-cluster LOCATION=us-central1 SPOT=true bash k8s/gpu-node-pool.sh   # Spot VMs
#
# What the compiled pipeline expects from the nodes, and where it comes from:
#   label cloud.google.com/gke-accelerator=<GPU_TYPE>  added by GKE to every node with --accelerator;
#                                                      `cnnpipe compile --gpu-type` selects on it
#   taint nvidia.com/gpu=present:NoSchedule            set below (GKE adds it too when the cluster
#                                                      has CPU pools); keeps CPU-only pods off GPUs
#   label cloud.google.com/gke-spot=true               added by GKE to Spot nodes (`--spot` selects it)
#   taint cloud.google.com/gke-spot=true:NoSchedule    set below with SPOT=true (`--spot` tolerates it)
# The pool scales from 0, so idle GPUs cost nothing; the driver is installed by GKE.
set -euo pipefail

: "${CLUSTER:?set CLUSTER to the GKE cluster name}"
: "${LOCATION:?set LOCATION to the cluster region or zone, e.g. us-central1}"
GPU_TYPE="${GPU_TYPE:-nvidia-l4}"          # must equal `cnnpipe compile --gpu-type`
GPUS_PER_NODE="${GPUS_PER_NODE:-1}"        # >= `cnnpipe compile --gpus-per-task`
MACHINE_TYPE="${MACHINE_TYPE:-g2-standard-8}"  # 8 vCPU, 32 GB: fits one train pod (4 CPU, 16 GB requested)
MAX_NODES="${MAX_NODES:-4}"                # at most this many models train at once
SPOT="${SPOT:-false}"

taints="nvidia.com/gpu=present:NoSchedule"
spot_flags=()
pool_suffix=""
if [ "$SPOT" = true ]; then
  taints="${taints},cloud.google.com/gke-spot=true:NoSchedule"
  spot_flags=(--spot)
  pool_suffix="-spot"
fi
POOL="${POOL:-gpu-${GPU_TYPE#nvidia-}${pool_suffix}}"

gcloud container node-pools create "$POOL" \
  --cluster "$CLUSTER" \
  --location "$LOCATION" \
  --machine-type "$MACHINE_TYPE" \
  --accelerator "type=${GPU_TYPE},count=${GPUS_PER_NODE},gpu-driver-version=latest" \
  --node-taints "$taints" \
  --enable-autoscaling --num-nodes 0 --min-nodes 0 --max-nodes "$MAX_NODES" \
  --workload-metadata GKE_METADATA \
  ${spot_flags[@]+"${spot_flags[@]}"}
