#!/bin/sh
# The files deploy/compose/compose.yaml takes as secrets, made once in deploy/compose/secrets/
# (never committed). Run from deploy/compose/, as root so that the files can be given to the
# users that read them (the safehub image's 10001, the apache/kafka image's 1000):
#   sh make-secrets.sh
# Kafka principals' passwords are not made here: `safehub access apply` (the compose `setup`
# service) makes them in the kafka-passwords volume. The hub users file, the hubs'
# re-identification keys and the key service's keys are the operator's (docs/operations.md).
set -eu
umask 077
cd "$(dirname "$0")"
mkdir -p secrets/reid-keys secrets/keyservice-keys secrets/keyservice-clients
cd secrets
rand() { openssl rand -base64 32 | tr -d '\n=/+'; }
[ -f kafka-admin-password ] || rand > kafka-admin-password
[ -f postgres-password ] || rand > postgres-password
[ -f postgres-pgpass ] || printf 'postgres:5432:*:safehub:%s\n' "$(cat postgres-password)" > postgres-pgpass
[ -f keyservice-operator ] || rand > keyservice-operator
[ -f audit-signing-key ] || openssl rand -hex 32 > audit-signing-key
if [ ! -f kafka-ca ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=safehub compose CA" \
    -keyout ca.key -out kafka-ca
  # The broker's certificate, CN safehub-node (its principal on the mutual-TLS listeners).
  openssl req -newkey rsa:3072 -nodes -subj "/CN=safehub-node" -keyout node.key -out node.csr
  printf 'subjectAltName=DNS:kafka,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > node.ext
  openssl x509 -req -in node.csr -CA kafka-ca -CAkey ca.key -CAcreateserial -days 825 \
    -extfile node.ext -out node.crt
  # Kafka's PEM keystore: the private key (PKCS#8, unencrypted) and the chain in one file.
  openssl pkcs8 -topk8 -nocrypt -in node.key > kafka-node-pem
  cat node.crt kafka-ca >> kafka-node-pem
  rm -f node.csr node.ext node.key node.crt kafka-ca.srl
  chmod 0644 kafka-ca
fi
for f in web-tls-cert keyservice-tls-cert; do
  key="${f%-cert}-key"
  [ -f "$f" ] || openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,DNS:keyservice" -keyout "$key" -out "$f"
done
[ -f web-users ] || { echo "secrets/web-users is missing: write the hub users file" \
  "(services/web/users.example.toml; hashes from \`safehub web --hash-password\`)" >&2; }
if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 .
  # The broker (uid 1000) reads its key; the admin-credential job (10001) reads it by group.
  chown 1000:10001 kafka-node-pem && chmod 0640 kafka-node-pem
  chown 70:70 postgres-password  # the postgres image's user
  chown 101:101 web-tls-cert web-tls-key  # nginx-unprivileged's user, the web's TLS proxy
fi
