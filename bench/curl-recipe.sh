#!/bin/bash
# The recipe users put in EC2 user-data today, kept as the baseline of bench/boot.sh: curl and jq,
# an IMDSv2 token, the signed identity document, an ec2 login with a stored nonce, each secret
# read one after another, files written with jq, the token revoked. Deliberately ordinary: this is
# what vaultboot replaces, not a recommendation (the Vault token travels in curl's argv, secrets
# sit in shell variables, nothing is retried, files are written one by one without fsync).
#
# Everything it talks to or writes comes from the environment, so that the benchmark can point
# it at the simulators on loopback; the defaults are what a real instance would use.
set -euo pipefail

IMDS=${IMDS:-http://169.254.169.254}
VAULT_ADDR=${VAULT_ADDR:-https://vault.internal:8200}
VAULT_CACERT=${VAULT_CACERT:-/etc/vault/ca.pem}
ROLE=${ROLE:-web}
NONCE_FILE=${NONCE_FILE:-/var/lib/vault-login/nonce}
AD_ENV=${AD_ENV:-/run/ad-join.env}
API_KEY_FILE=${API_KEY_FILE:-/etc/app/api-key}
TLS_CERT=${TLS_CERT:-/etc/nginx/tls/server.crt}
TLS_KEY=${TLS_KEY:-/etc/nginx/tls/server.key}

# IMDSv2: a session token, then every read with it.
IMDS_TOKEN=$(curl -sSf --noproxy '*' -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 60" \
    "$IMDS/latest/api/token")
imds() {
    curl -sSf --noproxy '*' -H "X-aws-ec2-metadata-token: $IMDS_TOKEN" "$IMDS/latest/$1"
}
PKCS7=$(imds dynamic/instance-identity/rsa2048 | tr -d '\n')
LOCAL_HOSTNAME=$(imds meta-data/local-hostname)
LOCAL_IPV4=$(imds meta-data/local-ipv4)

# The client nonce, kept so that a reboot can log in again.
if [ ! -s "$NONCE_FILE" ]; then
    mkdir -p "$(dirname "$NONCE_FILE")"
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n' >"$NONCE_FILE")
fi
NONCE=$(cat "$NONCE_FILE")

VAULT_TOKEN=$(jq -n --arg role "$ROLE" --arg pkcs7 "$PKCS7" --arg nonce "$NONCE" \
        '{role: $role, pkcs7: $pkcs7, nonce: $nonce}' |
    curl -sSf --cacert "$VAULT_CACERT" -H "X-Vault-Request: true" -X POST --data @- \
        "$VAULT_ADDR/v1/auth/aws/login" |
    jq -r .auth.client_token)
vault() {
    curl -sSf --cacert "$VAULT_CACERT" -H "X-Vault-Request: true" \
        -H "X-Vault-Token: $VAULT_TOKEN" "$@"
}

umask 077
vault "$VAULT_ADDR/v1/secret/data/ad/join" |
    jq -r '.data.data | "username=\(.username | @sh)\npassword=\(.password | @sh)"' >"$AD_ENV"
vault "$VAULT_ADDR/v1/secret/data/app/api" | jq -r .data.data.api_key >"$API_KEY_FILE"
TLS=$(jq -n --arg cn "$LOCAL_HOSTNAME" --arg ip "$LOCAL_IPV4" \
        '{common_name: $cn, ip_sans: $ip, ttl: "72h"}' |
    vault -X POST --data @- "$VAULT_ADDR/v1/pki_int/issue/web")
echo "$TLS" | jq -r '.data.certificate, (.data.ca_chain // [] | .[])' >"$TLS_CERT"
echo "$TLS" | jq -r .data.private_key >"$TLS_KEY"
chmod 0644 "$TLS_CERT"
echo "files in place" >&2 # the benchmark's time-to-files marker (a shell builtin: no fork)

vault -X POST "$VAULT_ADDR/v1/auth/token/revoke-self" >/dev/null
