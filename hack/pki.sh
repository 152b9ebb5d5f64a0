#!/usr/bin/env bash
# Creates the local cluster's CA, serving and client certificates, the
# service-account signing key and one kubeconfig per client identity.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$PKI_DIR"
cd "$PKI_DIR"

if [ -f ca.crt ] && [ -f "$KUBECONFIG_ADMIN" ] && grep -q "127.0.0.1:$APISERVER_PORT" "$KUBECONFIG_ADMIN"; then
  exit 0
fi
rm -f ./*.crt ./*.key ./*.csr ./*.srl ./*.kubeconfig
log "creating PKI in $PKI_DIR"

openssl genrsa -out ca.key 2048 2>/dev/null
openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -subj "/CN=mistral-operator-local-ca" -out ca.crt 2>/dev/null

# sign NAME SUBJECT [SAN]: a key and a certificate signed by the CA.
sign() {
  local name="$1" subj="$2" san="${3:-}"
  openssl genrsa -out "$name.key" 2048 2>/dev/null
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  local ext
  ext="$(mktemp)"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } > "$ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -sha256 \
    -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$ext" "$name.csr"
}

sign apiserver "/CN=kube-apiserver" \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
sign admin "/O=system:masters/CN=kubernetes-admin"
sign controller-manager "/CN=system:kube-controller-manager"
sign scheduler "/CN=system:kube-scheduler"
# kwok plays the kubelet of every simulated node. The Node authorizer would
# need one identity per node, so kwok acts as an administrator instead.
sign kwok "/O=system:masters/CN=kwok"

openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

# kubeconfig NAME FILE: a kubeconfig that authenticates with NAME's certificate.
kubeconfig() {
  local name="$1" file="$2"
  cat > "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mistral-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI_DIR/$name.crt
    client-key: $PKI_DIR/$name.key
contexts:
- name: mistral-local
  context:
    cluster: mistral-local
    user: $name
current-context: mistral-local
KC
}
kubeconfig controller-manager controller-manager.kubeconfig
kubeconfig scheduler scheduler.kubeconfig
kubeconfig kwok kwok.kubeconfig
kubeconfig admin "$KUBECONFIG_ADMIN"
