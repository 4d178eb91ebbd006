#!/bin/sh
# Creates a throwaway test PKI for tcpkit's TLS options in DIR (default
# build/certs). Every key is generated fresh on each run; nothing here is
# meant to leave the machine. Prints nothing on success.
# Usage: scripts/certs.sh [DIR]
#
#   ca.pem ca.key                 the test CA
#   server.pem server.key         CA-signed, serverAuth, SAN localhost 127.0.0.1 ::1
#   expired.pem expired.key       the same, but valid only in January 2020
#   wronghost.pem wronghost.key   CA-signed, SAN wrong.example only
#   other-ca.pem other-ca.key     a second CA that nobody trusts
#   untrusted.pem untrusted.key   server certificate (right SANs) from other-ca
#   client-ca.pem client-ca.key   a CA for client certificates
#   client.pem client.key         clientAuth, from client-ca
#   other-client.pem other-client.key  clientAuth, from other-ca
#
# docs/security.md ("Test certificates") explains each command.
set -eu

dir=${1:-build/certs}
umask 077
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d "$dir/.certs.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# One configuration for every step, so the system's openssl.cnf (which may
# add its own extensions) plays no part.
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tcpkit test
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[wronghost_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
# `openssl ca` is used only for the expired certificate: unlike `openssl
# x509 -req` in OpenSSL 3.0 it takes an explicit validity window.
[ca]
default_ca = expired_ca
[expired_ca]
database = index.txt
new_certs_dir = .
default_md = sha256
policy = any
unique_subject = no
rand_serial = yes
[any]
commonName = supplied
EOF
export OPENSSL_CONF="$work/openssl.cnf"
: >index.txt

# Everything happens in $work. Each step logs to NAME.log; fail NAME FILE
# says which file could not be made and shows that log.
fail() {
    echo "certs.sh: cannot create $2:" >&2
    cat "$1.log" >&2
    exit 1
}

# Keys are EC P-256: generated in milliseconds, accepted at every security
# level. -nodes leaves them unencrypted (a server must read them unattended).

# ca NAME CN: a new key and a self-signed CA certificate, valid ten years.
ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -subj "/CN=$2" -days 3650 -sha256 -extensions ca_ext \
        -out "$1.pem" 2>"$1.log" || fail "$1" "$1.pem"
}

# leaf NAME CN CA EXT: a new key and a certificate for it signed by CA with
# the extensions of section EXT, valid one year (`req -CA` makes and signs
# the certificate in one run, with a random serial number).
leaf() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -subj "/CN=$2" -CA "$3.pem" -CAkey "$3.key" -days 365 -sha256 \
        -extensions "$4" -out "$1.pem" 2>"$1.log" || fail "$1" "$1.pem"
}

# csr NAME CN: a new key and a certificate request for it.
csr() {
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -subj "/CN=$2" -out "$1.csr" 2>"$1.log" || fail "$1" "$1.csr"
}

# old_leaf NAME CA: NAME's request signed by CA with server_ext, valid only in
# January 2020. `openssl ca` takes explicit dates (OpenSSL 3.0's x509 has no
# -not_before/-not_after).
old_leaf() {
    openssl ca -batch -notext -in "$1.csr" -cert "$2.pem" -keyfile "$2.key" \
        -startdate 20200101000000Z -enddate 20200131000000Z -extensions server_ext \
        -out "$1.pem" >>"$1.log" 2>&1 || fail "$1" "$1.pem"
}

# Each openssl run costs about 0.1 s, mostly start-up: run the independent
# ones side by side. wait PID returns that job's status.
run() {
    pids=
    while [ $# -gt 0 ]; do
        $1 &
        pids="$pids $!"
        shift
    done
    for p in $pids; do
        wait "$p" || exit 1
    done
}

run "ca ca tcpkit-test-CA" "ca other-ca tcpkit-untrusted-test-CA" \
    "ca client-ca tcpkit-test-client-CA" "csr expired localhost"
run "leaf server localhost ca server_ext" "old_leaf expired ca" \
    "leaf wronghost wrong.example ca wronghost_ext" "leaf untrusted localhost other-ca server_ext" \
    "leaf client tcpkit-test-client client-ca client_ext" \
    "leaf other-client tcpkit-rogue-client other-ca client_ext"

# Replace the previous set only once the new one is complete. (Keys are
# 0600 from the umask; certificates may be read by anyone.)
names="ca other-ca client-ca server expired wronghost untrusted client other-client"
keys=''
certs=''
for n in $names; do
    keys="$keys $n.key"
    certs="$certs $n.pem"
done
# shellcheck disable=SC2086
chmod 644 $certs
# shellcheck disable=SC2086
mv -f $keys $certs "$dir/"
