#!/bin/sh
# Print a Secret manifest holding a read-only kubeconfig of the monitored
# cluster, for the insight cluster's collector (`events` target).
#
#   KUBECONFIG=monitored.yaml manifests/agents/kubeconfig-secret.sh prod-eu-1 \
#     | kubectl --kubeconfig insight.yaml apply -f -
#
# Arguments: CLUSTER [AGENTS_NAMESPACE] [INSIGHT_NAMESPACE]
# It reads the token Secret that the agents chart creates for the
# `kube-insight-watcher` ServiceAccount (get/list/watch, never Secrets).
# The servers chart mounts the result when `collector.kubeconfigSecret` is
# `kube-insight-kubeconfig-CLUSTER`.
set -eu

cluster=${1:?usage: kubeconfig-secret.sh CLUSTER [AGENTS_NAMESPACE] [INSIGHT_NAMESPACE]}
agents_ns=${2:-kube-insight-agents}
insight_ns=${3:-kube-insight}
sa=kube-insight-watcher

server=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl -n "$agents_ns" get secret "$sa-token" -o jsonpath='{.data.ca\.crt}')
token=$(kubectl -n "$agents_ns" get secret "$sa-token" -o jsonpath='{.data.token}' | base64 -d)
if [ -z "$token" ]; then
  echo "kubeconfig-secret.sh: secret $agents_ns/$sa-token has no token yet; apply the agents chart first" >&2
  exit 1
fi

kubeconfig=$(cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: $cluster
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: $sa
    user:
      token: $token
contexts:
  - name: $cluster
    context:
      cluster: $cluster
      user: $sa
current-context: $cluster
KUBECONFIG
)

kubectl create secret generic "kube-insight-kubeconfig-$cluster" \
  --namespace "$insight_ns" \
  --from-literal=kubeconfig="$kubeconfig" \
  --dry-run=client -o yaml
