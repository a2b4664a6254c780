#!/usr/bin/env bash
# End-to-end on a real Kubernetes cluster made with kind (https://kind.sigs.k8s.io), for a
# machine with Docker, kind, kubectl and helm. It:
#   1. creates a kind cluster, builds the broker and operator images and loads them into it;
#   2. `helm install`s the chart (CRDs included);
#   3. applies a BrokerSet of 2 groups x (master + slave, authentication on), a Topic, a
#      ConsumerGroup and a User and waits for all four to be Ready;
#   4. sends and receives through the official Python client in a pod, signing as the User;
#   5. deletes a master pod, checks that sending goes on and that the status names the new master;
#   6. scales to 3 broker groups and checks the topic reaches the new group;
#   7. deletes the cluster (also on failure; KEEP_CLUSTER=1 keeps it).
# Exits 0 with a "SKIP:" line when a tool is missing (as on machines without a Docker engine).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cluster=${KIND_CLUSTER:-ferrocket-e2e}
tag=e2e
ns=ferrocket-e2e

for tool in docker kind kubectl helm; do
  if ! command -v "$tool" >/dev/null; then
    echo "SKIP: $tool is not installed (the kind suite needs docker, kind, kubectl and helm)"
    exit 0
  fi
done
if ! docker info >/dev/null 2>&1; then
  echo "SKIP: no Docker engine answers (docker info failed)"
  exit 0
fi

step() { printf '\n==> %s\n' "$*"; }
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "cluster $cluster"
kind create cluster --name "$cluster" --wait 120s

step "images"
docker build -t "ferrocket:$tag" -f Dockerfile .
docker build -t "ferrocket-operator:$tag" -f operator/Dockerfile .
kind load docker-image --name "$cluster" "ferrocket:$tag" "ferrocket-operator:$tag"

step "helm install"
helm install ferrocket charts/ferrocket --namespace ferrocket-system --create-namespace \
  --set operator.image.repository=ferrocket-operator --set operator.image.tag="$tag" \
  --set operator.image.pullPolicy=Never --wait --timeout 5m

step "BrokerSet, Topic, ConsumerGroup and User"
kubectl create namespace "$ns"
sed -e "s/namespace: default/namespace: $ns/" -e "s#image: .*#image: ferrocket:$tag#" \
  examples/kubernetes/brokerset.yaml | kubectl apply -f -
for f in topic consumergroup user; do
  sed -e "s/namespace: default/namespace: $ns/" "examples/kubernetes/$f.yaml" | kubectl apply -f -
done
kubectl -n "$ns" wait --for=condition=Ready brokerset/demo --timeout=10m
kubectl -n "$ns" wait --for=condition=Ready topic/orders consumergroup/billing user.ferrocket.io/orders-app --timeout=5m
kubectl -n "$ns" get fbs,ftopic,fcg,fuser

step "send and receive with the official Python client in a pod"
kubectl -n "$ns" create configmap client --from-file=client.py=e2e/clients/python/client.py
kubectl -n "$ns" apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
    - name: client
      image: python:3.11-slim
      command: [sh, -c, "pip install -q rocketmq-python-client==5.1.2 && touch /tmp/ready && sleep infinity"]
      readinessProbe:
        exec:
          command: [test, -f, /tmp/ready]
      volumeMounts:
        - {name: c, mountPath: /c}
  volumes:
    - {name: c, configMap: {name: client}}
YAML
kubectl -n "$ns" wait --for=condition=Ready pod/client --timeout=5m
endpoint="demo-0-client.$ns.svc:8081"
# Authentication is on: the client signs as the example User, whose rules allow orders and billing,
# with the keys from the Secret the operator generated for it.
ak=$(kubectl -n "$ns" get secret orders-app-credentials -o jsonpath='{.data.accessKey}' | base64 -d)
sk=$(kubectl -n "$ns" get secret orders-app-credentials -o jsonpath='{.data.secretKey}' | base64 -d)
client() { kubectl -n "$ns" exec client -- python /c/client.py "$@" --access-key "$ak" --secret-key "$sk"; }
sent=$(client send --endpoint "$endpoint" --topic orders --count 20 | grep -c '"id"')
[ "$sent" = 20 ] || { echo "sent $sent of 20"; exit 1; }
got=$(client receive --endpoint "$endpoint" --topic orders --group billing --count 20 --timeout 120 | grep -c '"id"')
[ "$got" = 20 ] || { echo "received $got of 20"; exit 1; }

step "delete the master of demo-0"
master=$(kubectl -n "$ns" get brokerset demo -o jsonpath='{.status.groups[0].master}')
echo "master: $master"
kubectl -n "$ns" delete pod "$master" --wait=false
for _ in $(seq 120); do
  now=$(kubectl -n "$ns" get brokerset demo -o jsonpath='{.status.groups[0].master}')
  [ -n "$now" ] && [ "$now" != "$master" ] && break
  sleep 2
done
echo "master now: $now"
[ "$now" != "$master" ] || { echo "the status never named a new master"; exit 1; }
sent=$(client send --endpoint "$endpoint" --topic orders --count 10 | grep -c '"id"')
[ "$sent" = 10 ] || { echo "sent $sent of 10 after the failover"; exit 1; }

step "scale to 3 broker groups"
kubectl -n "$ns" patch brokerset demo --type merge -p '{"spec":{"brokerGroups":3}}'
kubectl -n "$ns" wait --for=jsonpath='{.status.observedGeneration}'="$(kubectl -n "$ns" get brokerset demo -o jsonpath='{.metadata.generation}')" brokerset/demo --timeout=2m
kubectl -n "$ns" wait --for=condition=Ready brokerset/demo --timeout=10m
for _ in $(seq 60); do
  groups=$(kubectl -n "$ns" get topic orders -o jsonpath='{.status.queues[*].group}')
  case " $groups " in *" demo-2 "*) break ;; esac
  sleep 2
done
echo "topic orders on: $groups"
case " $groups " in *" demo-2 "*) ;; *) echo "the topic never reached demo-2"; exit 1 ;; esac

step "passed"
