#!/usr/bin/env bash
# Runs a real Kubernetes control plane on 127.0.0.1 until stopped (SIGTERM/SIGINT, or its parent
# closing stdin): etcd (Debian's etcd-server), kube-apiserver and kube-controller-manager v1.20.2
# (from build.sh). TLS with a throwaway CA made by openssl, token authentication, RBAC. No
# kubelet: pods stay Pending.
#
#   e2e/apiserver/run.sh BIN_DIR STATE_DIR
# writes STATE_DIR/admin.kubeconfig (system:masters) and STATE_DIR/tokens.csv (add users there
# before starting; `operator` is the chart's ServiceAccount ferrocket-system/ferrocket), then
# STATE_DIR/ready once the API server answers /readyz. Everything it starts is stopped on exit.
set -euo pipefail
bin=$1
state=$2
mkdir -p "$state"
cd "$state"
pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)

# A throwaway CA, the API server's serving certificate, and the service-account signing key.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ferrocket-test-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >san.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out apiserver.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

admin_token=$(openssl rand -hex 16)
operator_token=$(openssl rand -hex 16)
{
  echo "$admin_token,admin,admin,system:masters"
  echo "$operator_token,system:serviceaccount:ferrocket-system:ferrocket,operator,\"system:serviceaccounts,system:serviceaccounts:ferrocket-system,system:authenticated\""
} >tokens.csv

kubeconfig() { # kubeconfig USER TOKEN
  cat <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: test
    cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: "$state/ca.crt"}
users:
  - name: $1
    user: {token: "$2"}
contexts:
  - name: test
    context: {cluster: test, user: $1}
current-context: test
YAML
}
kubeconfig admin "$admin_token" >admin.kubeconfig
kubeconfig operator "$operator_token" >operator.kubeconfig

etcd --name test --data-dir "$state/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "test=http://127.0.0.1:$peer_port" >etcd.log 2>&1 &
pids+=($!)

"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file apiserver.crt --tls-private-key-file apiserver.key --client-ca-file ca.crt \
  --token-auth-file tokens.csv --authorization-mode RBAC \
  --service-account-key-file sa.pub --service-account-signing-key-file sa.key \
  --service-account-issuer https://kubernetes.default.svc \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=false --insecure-port 0 \
  >apiserver.log 2>&1 &
pids+=($!)

for _ in $(seq 600); do
  if curl -sfk -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$api_port/readyz" >/dev/null; then break; fi
  sleep 0.1
done
curl -sfk -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$api_port/readyz" >/dev/null \
  || { echo "kube-apiserver not ready in 60 s" >&2; tail -30 apiserver.log >&2; exit 1; }

"$bin/kube-controller-manager" --kubeconfig admin.kubeconfig --service-account-private-key-file sa.key \
  --root-ca-file ca.crt --leader-elect=false --port 0 --secure-port 0 --controllers '*' \
  >controller-manager.log 2>&1 &
pids+=($!)

touch ready
echo "ready https://127.0.0.1:$api_port"
# Until told to stop, or the parent goes away.
while kill -0 "${pids[@]}" 2>/dev/null; do
  read -r -t 1 _ || [ $? -gt 128 ] || exit 0
done
echo "a control-plane process exited" >&2
exit 1
