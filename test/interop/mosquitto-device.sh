#!/usr/bin/env bash
# A provisiond device made of mosquitto_sub / mosquitto_rr, openssl and coreutils only, following
# docs/protocol.md step by step (the section numbers below refer to it). It proves that the
# protocol can be implemented without any provisiond code.
#
#   key + CSR (openssl)  ->  bootstrap session: CSR, certificate, checks
#   -> operational session (mutual TLS): signed config, x5c + ES256 check, Wi-Fi secret JWE
#      (ECDH-ES + A128CBC-HS256, tag checked), acknowledgement, state "provisioned".
#
# Request/response with CLI clients (docs/protocol.md §10): one persistent session per phase,
# created by `mosquitto_sub -c -E` subscribed to the error topic(s), then `mosquitto_rr -c`
# subscribes the success topic, publishes the request and prints the first message of the
# session, whichever topic it came on. A clean-session connection removes the session again.
#
# Input (options win over environment):
#   --bootstrap FILE   the claim response's "bootstrap" object (token, mqttUrl, clientId, caCertificate)
#   --url URL          mqtts://host:port                         [MQTT_URL]
#   --host HOST        broker host (instead of --url)            [MQTT_HOST]
#   --port PORT        broker port (instead of --url)            [MQTT_PORT]
#   --device-id ID     device id = client id = username          [DEVICE_ID]
#   --token-file FILE  file holding the bootstrap token          [BOOTSTRAP_TOKEN holds the token itself]
#   --ca FILE          root CA PEM (trust anchor)                [ROOT_CA]
#   --timeout SECONDS  wait for each answer at most this long    [DEVICE_TIMEOUT, default 15]
#   --workdir DIR      keep key, certificate and documents here  [DEVICE_WORKDIR, default: temp dir, removed]
#
# stdout (only): CERT_SERIAL=<hex>, WIFI_SSID=<ssid>, WIFI_SECRET=<secret>, STATE=provisioned
# stderr: progress and errors.
# Exit status: 0 provisioned, 2 usage or missing tool, 3 connection refused (CONNACK) or TLS
# failure, 4 request rejected by the service (csr/rejected, errors, SUBACK 0x80), 5 a check of
# something received failed (certificate, config signature, JWE), 6 no answer in time, 1 other.
set -euo pipefail

PROG=${0##*/}
log() { printf '%s %s: %s\n' "$(date +%H:%M:%S.%3N)" "$PROG" "$*" >&2; }
die() {
  local code=$1
  shift
  printf '%s: FAILED: %s\n' "$PROG" "$*" >&2
  exit "$code"
}
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# ------------------------------------------------------------------------------------- inputs
BOOTSTRAP_FILE=''
URL=${MQTT_URL:-}
HOST=${MQTT_HOST:-}
PORT=${MQTT_PORT:-}
ID=${DEVICE_ID:-}
TOKEN=${BOOTSTRAP_TOKEN:-}
CA_FILE=${ROOT_CA:-}
TIMEOUT=${DEVICE_TIMEOUT:-15}
WORKDIR=${DEVICE_WORKDIR:-}
while (($#)); do
  case $1 in
    --bootstrap) BOOTSTRAP_FILE=${2:?}; shift 2 ;;
    --url) URL=${2:?}; shift 2 ;;
    --host) HOST=${2:?}; shift 2 ;;
    --port) PORT=${2:?}; shift 2 ;;
    --device-id) ID=${2:?}; shift 2 ;;
    --token-file) TOKEN=$(tr -d ' \r\n' <"${2:?}"); shift 2 ;;
    --ca) CA_FILE=${2:?}; shift 2 ;;
    --timeout) TIMEOUT=${2:?}; shift 2 ;;
    --workdir) WORKDIR=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) printf '%s: unknown argument %s\n' "$PROG" "$1" >&2; usage ;;
  esac
done

for tool in mosquitto_sub mosquitto_rr openssl jq xxd base64 timeout sha256sum; do
  command -v "$tool" >/dev/null || die 2 "$tool is not installed"
done

if [[ -n $WORKDIR ]]; then
  mkdir -p "$WORKDIR"
  W=$(cd "$WORKDIR" && pwd)
else
  W=$(mktemp -d "${TMPDIR:-/tmp}/mosquitto-device.XXXXXX")
  trap 'rm -rf "$W"' EXIT
fi
chmod 700 "$W"
umask 077

if [[ -n $BOOTSTRAP_FILE ]]; then
  [[ -n $URL || -n $HOST ]] || URL=$(jq -er .mqttUrl "$BOOTSTRAP_FILE")
  [[ -n $ID ]] || ID=$(jq -er .clientId "$BOOTSTRAP_FILE")
  [[ -n $TOKEN ]] || TOKEN=$(jq -er .token "$BOOTSTRAP_FILE")
  if [[ -z $CA_FILE ]]; then
    jq -er .caCertificate "$BOOTSTRAP_FILE" >"$W/root.pem"
    CA_FILE=$W/root.pem
  fi
fi
if [[ -n $URL ]]; then
  [[ $URL =~ ^mqtts://(\[[^]]+\]|[^:/]+):([0-9]+)/?$ ]] || die 2 "--url must look like mqtts://host:port (got $URL)"
  HOST=${HOST:-${BASH_REMATCH[1]}}
  PORT=${PORT:-${BASH_REMATCH[2]}}
  HOST=${HOST#[}
  HOST=${HOST%]}
fi
[[ -n $HOST && -n $PORT && -n $ID && -n $TOKEN && -n $CA_FILE ]] || {
  printf '%s: host, port, device id, bootstrap token and root CA are required\n' "$PROG" >&2
  usage
}
[[ $ID =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || die 2 "invalid device id: $ID"
[[ -r $CA_FILE ]] || die 2 "cannot read the root CA file $CA_FILE"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die 2 "--timeout must be a positive integer"
[[ $CA_FILE == "$W/root.pem" ]] || cp "$CA_FILE" "$W/root.pem"
ROOT=$W/root.pem

T=devices/$ID # topic prefix (§4)

# mosquitto clients read default options from $XDG_CONFIG_HOME/<program>: the bootstrap
# credential goes there (mode 0600) instead of onto the command line, where `ps` would show it.
# The operational directory stays empty: no user configuration file can interfere.
mkdir -p "$W/cfg-bootstrap" "$W/cfg-operational"
for prog in mosquitto_sub mosquitto_rr mosquitto_pub; do
  printf -- '-u %s\n-P %s\n' "$ID" "$TOKEN" >"$W/cfg-bootstrap/$prog"
done

# ------------------------------------------------------------------------------------ helpers
# base64url (RFC 4648 §5, no padding) -> bytes
b64url_decode() {
  local s
  s=$(tr -- '-_' '+/')
  while ((${#s} % 4)); do s+='='; done
  printf '%s' "$s" | base64 -d
}
hex() { xxd -p | tr -d '\n'; }

# mqtt KIND WHAT CMD... : runs a mosquitto client (KIND bootstrap|operational selects the
# credentials), stdout to $W/out; maps failures to exit codes with a clear message.
mqtt() {
  local kind=$1 what=$2 rc=0
  shift 2
  XDG_CONFIG_HOME=$W/cfg-$kind timeout $((TIMEOUT + 10)) "$@" >"$W/out" 2>"$W/err" || rc=$?
  if grep -q 'subscription requests were denied' "$W/err"; then
    die 4 "$what: the broker refused the subscription (SUBACK 0x80, TOPIC_FORBIDDEN)"
  fi
  ((rc == 0)) && return 0
  local err
  err=$(tr '\n' ' ' <"$W/err")
  case $err in
    *'Connection Refused: identifier rejected'*)
      die 3 "$what: CONNACK 2 (identifier rejected): the client id is not the device id (CLIENT_ID_MISMATCH)" ;;
    *'Connection Refused: broker unavailable'* | *'Connection Refused: server unavailable'*)
      die 3 "$what: CONNACK 3 (server unavailable): the service store is unavailable, retry later (STORE_UNAVAILABLE)" ;;
    *'Connection Refused: bad user name or password'*)
      die 3 "$what: CONNACK 4 (bad user name or password): the bootstrap token is invalid, expired or already used (TOKEN_INVALID, TOKEN_EXPIRED, TOKEN_USED)" ;;
    *'Connection Refused: not authorised'* | *'Connection Refused: not authorized'*)
      die 3 "$what: CONNACK 5 (not authorized): wrong device state or certificate not accepted (DEVICE_STATE_INVALID, CERTIFICATE_UNTRUSTED, CERTIFICATE_UNKNOWN, CERTIFICATE_EXPIRED)" ;;
    *'Connection Refused'*) die 3 "$what: connection refused: $err" ;;
    *TLS* | *SSL* | *certificate*) die 3 "$what: TLS failure (is --ca the service root CA and the host name in the broker certificate?): $err" ;;
    *'Timed out'*) die 6 "$what: no answer within ${TIMEOUT}s" ;;
  esac
  ((rc == 124)) && die 6 "$what: no answer within ${TIMEOUT}s (killed)"
  ((rc == 27)) && die 6 "$what: no answer within ${TIMEOUT}s"
  die 1 "$what: ${1##*/} exited with $rc: $err"
}

TLS_BOOTSTRAP=(-V mqttv311 -h "$HOST" -p "$PORT" --cafile "$ROOT" -i "$ID" -k 30)

# ---------------------------------------------------------------- §5 key pair and CSR (P-256)
log "device $ID, broker $HOST:$PORT"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/device.key" 2>/dev/null
openssl req -new -key "$W/device.key" -subj "/CN=$ID" -out "$W/device.csr"
REQUEST_ID=$(openssl rand -hex 8)
CSR_MSG=$(jq -cn --arg r "$REQUEST_ID" --rawfile csr "$W/device.csr" '{requestId: $r, csr: $csr}')
log "generated a P-256 key and a CSR (requestId $REQUEST_ID)"

# ------------------------------------------------------------ §6, §10 bootstrap session: CSR
# 1. clean session: removes whatever an earlier attempt may have left behind
mqtt bootstrap 'bootstrap connect' mosquitto_sub "${TLS_BOOTSTRAP[@]}" -q 1 -t "$T/errors" -E -W "$TIMEOUT"
# 2. persistent session subscribed to the rejection topics
mqtt bootstrap 'bootstrap subscribe' mosquitto_sub "${TLS_BOOTSTRAP[@]}" -c -q 1 -t "$T/csr/rejected" -t "$T/errors" -E -W "$TIMEOUT"
# 3. same session: subscribe csr/accepted, publish the CSR, print the first answer
log "sending the CSR on $T/csr"
mqtt bootstrap 'CSR request' mosquitto_rr "${TLS_BOOTSTRAP[@]}" -c -q 1 -e "$T/csr/accepted" -t "$T/csr" -m "$CSR_MSG" -v -W "$TIMEOUT"
read -r TOPIC ANSWER <"$W/out" || true
case $TOPIC in
  "$T/csr/accepted") ;;
  "$T/csr/rejected" | "$T/errors")
    die 4 "the service rejected the CSR: $(jq -r '"\(.code): \(.message)"' <<<"$ANSWER" 2>/dev/null || printf '%s' "$ANSWER")" ;;
  *) die 1 "unexpected answer on '$TOPIC': $ANSWER" ;;
esac
printf '%s' "$ANSWER" >"$W/csr-accepted.json"
[[ $(jq -r .requestId <<<"$ANSWER") == "$REQUEST_ID" ]] || die 5 "the answer is for another request ($(jq -r .requestId <<<"$ANSWER"))"

# ----------------------------------------------------------------- §7 check the certificate
jq -er .certificate <<<"$ANSWER" >"$W/device.crt"
jq -er '.chain[]' <<<"$ANSWER" >"$W/chain.pem"
jq -er '.chain[0]' <<<"$ANSWER" >"$W/issuing.pem"
openssl verify -CAfile "$ROOT" -untrusted "$W/chain.pem" -purpose sslclient "$W/device.crt" >/dev/null 2>"$W/err" ||
  die 5 "the certificate does not chain to the root CA: $(tr '\n' ' ' <"$W/err")"
[[ "$(openssl x509 -in "$W/device.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum)" == \
  "$(openssl pkey -in "$W/device.key" -pubout -outform DER | sha256sum)" ]] || die 5 "the certificate is not for my key"
SAN=$(openssl x509 -in "$W/device.crt" -noout -ext subjectAltName)
[[ $SAN == *"URI:urn:provisiond:device:$ID" ]] || die 5 "the certificate does not name this device (SAN URI urn:provisiond:device:$ID missing)"
SERIAL=$(openssl x509 -in "$W/device.crt" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
[[ $SERIAL == "$(jq -r .serial <<<"$ANSWER")" ]] || die 5 "serial in the answer does not match the certificate"
log "certificate $SERIAL verified against the root (valid until $(jq -r .notAfter <<<"$ANSWER"))"
printf 'CERT_SERIAL=%s\n' "$SERIAL"

# --------------------------------------------------------- §8, §9 operational session: config
# Client certificate followed by its issuing CA (the broker also accepts the certificate alone).
cat "$W/device.crt" "$W/issuing.pem" >"$W/device-chain.crt"
TLS_OPERATIONAL=(-V mqttv311 -h "$HOST" -p "$PORT" --cafile "$ROOT" --cert "$W/device-chain.crt" --key "$W/device.key" -i "$ID" -k 30)
# Clean session (also drops the bootstrap session). One SUBSCRIBE: state and errors come before
# config in it; subscribing to config makes the service publish the document.
log "mutual-TLS connection, subscribing to state, errors, config"
mqtt operational 'config subscription' mosquitto_sub "${TLS_OPERATIONAL[@]}" -q 1 \
  -t "$T/state" -t "$T/errors" -t "$T/config" -C 1 -v -W "$TIMEOUT"
read -r TOPIC JWS <"$W/out" || true
[[ $TOPIC == "$T/config" ]] || die 4 "expected the config document, got '$TOPIC': $JWS"

# ---------------------------------------------------------- §11 verify the config JWS (ES256)
IFS=. read -r JWS_H JWS_P JWS_S JWS_EXTRA <<<"$JWS"
[[ -n $JWS_H && -n $JWS_P && -n $JWS_S && -z $JWS_EXTRA ]] || die 5 "the config is not a compact JWS"
HEADER=$(printf '%s' "$JWS_H" | b64url_decode)
[[ $(jq -r .alg <<<"$HEADER") == ES256 ]] || die 5 "config alg is not ES256"
[[ $(jq -r .typ <<<"$HEADER") == provisiond-config+jws ]] || die 5 "config typ is not provisiond-config+jws"
N=$(jq '.x5c | length' <<<"$HEADER")
((N >= 1)) || die 5 "config header has no x5c"
: >"$W/x5c-untrusted.pem"
for ((i = 0; i < N; i++)); do
  jq -r ".x5c[$i]" <<<"$HEADER" | base64 -d | openssl x509 -inform DER -out "$W/x5c-$i.pem" 2>/dev/null ||
    die 5 "x5c[$i] is not a DER certificate"
  ((i == 0)) || cat "$W/x5c-$i.pem" >>"$W/x5c-untrusted.pem"
done
openssl verify -CAfile "$ROOT" -untrusted "$W/x5c-untrusted.pem" "$W/x5c-0.pem" >/dev/null 2>"$W/err" ||
  die 5 "the config signer certificate does not chain to the root CA: $(tr '\n' ' ' <"$W/err")"
[[ $(openssl x509 -in "$W/x5c-0.pem" -noout -ext basicConstraints) == *CA:FALSE* ]] || die 5 "the config signer is a CA certificate"
# the signer must carry the provisiond config-signing EKU (device and broker certificates do not)
CONFIG_SIGNING_EKU=2.25.255650878675251502668112521049223055722
[[ $(openssl x509 -in "$W/x5c-0.pem" -noout -ext extendedKeyUsage 2>/dev/null | tail -n +2 | tr -d ' ') == "$CONFIG_SIGNING_EKU" ]] ||
  die 5 "the config signer certificate lacks the config-signing extended key usage $CONFIG_SIGNING_EKU"
# raw r||s (64 bytes) -> DER ECDSA-Sig-Value for openssl
SIG_HEX=$(printf '%s' "$JWS_S" | b64url_decode | hex)
((${#SIG_HEX} == 128)) || die 5 "ES256 signature must be 64 bytes"
printf 'asn1=SEQUENCE:sig\n[sig]\nr=INTEGER:0x%s\ns=INTEGER:0x%s\n' "${SIG_HEX:0:64}" "${SIG_HEX:64:64}" >"$W/sig.cnf"
openssl asn1parse -genconf "$W/sig.cnf" -noout -out "$W/sig.der" >/dev/null
printf '%s.%s' "$JWS_H" "$JWS_P" >"$W/signing-input"
openssl x509 -in "$W/x5c-0.pem" -noout -pubkey >"$W/signer.pub"
openssl dgst -sha256 -verify "$W/signer.pub" -signature "$W/sig.der" "$W/signing-input" >/dev/null 2>&1 ||
  die 5 "the config signature does not verify"
DOC=$(printf '%s' "$JWS_P" | b64url_decode)
printf '%s' "$DOC" >"$W/config.json"
[[ $(jq -r .deviceId <<<"$DOC") == "$ID" ]] || die 5 "the config is for device $(jq -r .deviceId <<<"$DOC"), not $ID"
VERSION=$(jq -er '.version | select(type == "number" and . >= 1 and . == floor)' <<<"$DOC") || die 5 "config version is not a positive integer"
log "config version $VERSION verified (signer: $(openssl x509 -in "$W/x5c-0.pem" -noout -subject | sed 's/^subject=//'))"

# ------------------------------------------ §12 decrypt the Wi-Fi secret (ECDH-ES + A128CBC-HS256)
# Prints the plaintext of the JWE in $1; returns non-zero with a reason on stderr.
decrypt_jwe() {
  local h ek iv ct tag extra hdr x y z apu apv other k mac_key enc_key al calc
  IFS=. read -r h ek iv ct tag extra <<<"$1"
  [[ -n $h && -z $ek && -n $iv && -n $ct && -n $tag && -z $extra ]] || { echo 'not a compact ECDH-ES JWE' >&2; return 1; }
  hdr=$(printf '%s' "$h" | b64url_decode)
  [[ $(jq -r .alg <<<"$hdr") == ECDH-ES && $(jq -r .enc <<<"$hdr") == A128CBC-HS256 ]] || { echo "unexpected alg/enc: $hdr" >&2; return 1; }
  [[ $(jq -r '.zip // ""' <<<"$hdr") == '' ]] || { echo 'compressed JWE not supported' >&2; return 1; }
  [[ $(jq -r '.epk.kty + " " + .epk.crv' <<<"$hdr") == 'EC P-256' ]] || { echo 'epk must be an EC P-256 key' >&2; return 1; }
  x=$(jq -r .epk.x <<<"$hdr" | b64url_decode | hex)
  y=$(jq -r .epk.y <<<"$hdr" | b64url_decode | hex)
  ((${#x} == 64 && ${#y} == 64)) || { echo 'epk coordinates must be 32 bytes' >&2; return 1; }
  # epk JWK -> SubjectPublicKeyInfo DER (fixed P-256 prefix || 04 || x || y) -> PEM; openssl checks the point
  printf '3059301306072a8648ce3d020106082a8648ce3d030107034200%s%s%s' 04 "$x" "$y" | xxd -r -p |
    openssl pkey -pubin -inform DER -out "$W/epk.pem" 2>/dev/null || { echo 'epk is not a valid P-256 point' >&2; return 1; }
  openssl pkeyutl -derive -inkey "$W/device.key" -peerkey "$W/epk.pem" -out "$W/z.bin" 2>/dev/null || { echo 'ECDH derivation failed' >&2; return 1; }
  z=$(hex <"$W/z.bin")
  # Concat KDF (RFC 7518 §4.6.2, NIST SP 800-56A): one SHA-256 round gives the 256-bit key
  apu=$(jq -r '.apu // ""' <<<"$hdr" | b64url_decode | hex)
  apv=$(jq -r '.apv // ""' <<<"$hdr" | b64url_decode | hex)
  other=$(printf '%08x' 13)$(printf 'A128CBC-HS256' | hex)$(printf '%08x' $((${#apu} / 2)))$apu$(printf '%08x' $((${#apv} / 2)))$apv$(printf '%08x' 256)
  k=$(printf '00000001%s%s' "$z" "$other" | xxd -r -p | openssl dgst -sha256 -binary | hex)
  mac_key=${k:0:32}
  enc_key=${k:32:32}
  # A128CBC-HS256 (RFC 7518 §5.2.2.1): check the tag first, then decrypt
  iv=$(printf '%s' "$iv" | b64url_decode | hex)
  ((${#iv} == 32)) || { echo 'IV must be 16 bytes' >&2; return 1; }
  printf '%s' "$ct" | b64url_decode >"$W/ct.bin"
  tag=$(printf '%s' "$tag" | b64url_decode | hex)
  al=$(printf '%016x' $((${#h} * 8)))
  calc=$({ printf '%s' "$h"; printf '%s' "$iv" | xxd -r -p; cat "$W/ct.bin"; printf '%s' "$al" | xxd -r -p; } |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$mac_key" -binary | hex)
  [[ ${calc:0:32} == "$tag" ]] || { echo 'authentication tag mismatch' >&2; return 1; }
  openssl enc -d -aes-128-cbc -K "$enc_key" -iv "$iv" -in "$W/ct.bin" 2>/dev/null || { echo 'CBC decryption / padding failed' >&2; return 1; }
}

# --------------------------------------------------------------------- "apply" every item
ACK_ITEMS='[]'
FAILED=''
ITEMS=$(jq '.items | length' <<<"$DOC")
for ((i = 0; i < ITEMS; i++)); do
  ITEM=$(jq -c ".items[$i]" <<<"$DOC")
  ITEM_ID=$(jq -r .id <<<"$ITEM")
  case $(jq -r .type <<<"$ITEM") in
    network)
      SSID=$(jq -r .data.wifi.ssid <<<"$ITEM")
      printf 'WIFI_SSID=%s\n' "$SSID"
      SECRET_JWE=$(jq -r '.data.wifi.secretJwe // ""' <<<"$ITEM")
      if [[ -n $SECRET_JWE ]]; then
        if SECRET=$(decrypt_jwe "$SECRET_JWE" 2>"$W/err"); then
          printf 'WIFI_SECRET=%s\n' "$SECRET"
          log "network: ssid $SSID, $(jq -r .data.wifi.security <<<"$ITEM"), secret decrypted"
          ACK_ITEMS=$(jq -c --arg id "$ITEM_ID" '. + [{id: $id, status: "applied"}]' <<<"$ACK_ITEMS")
        else
          FAILED="network: $(tr '\n' ' ' <"$W/err")"
          ACK_ITEMS=$(jq -c --arg id "$ITEM_ID" --arg e "${FAILED:0:256}" '. + [{id: $id, status: "failed", error: $e}]' <<<"$ACK_ITEMS")
        fi
      else
        log "network: ssid $SSID, open"
        ACK_ITEMS=$(jq -c --arg id "$ITEM_ID" '. + [{id: $id, status: "applied"}]' <<<"$ACK_ITEMS")
      fi
      ;;
    security-policy)
      log "security policy: $(jq -c .data <<<"$ITEM")"
      ACK_ITEMS=$(jq -c --arg id "$ITEM_ID" '. + [{id: $id, status: "applied"}]' <<<"$ACK_ITEMS")
      ;;
    *)
      ACK_ITEMS=$(jq -c --arg id "$ITEM_ID" '. + [{id: $id, status: "failed", error: "unknown item type"}]' <<<"$ACK_ITEMS")
      ;;
  esac
done
ACK=$(jq -cn --argjson v "$VERSION" --argjson items "$ACK_ITEMS" '{version: $v, items: $items}')

# --------------------------------------------------------- §13, §14 acknowledgement and state
mqtt operational 'operational subscribe' mosquitto_sub "${TLS_OPERATIONAL[@]}" -c -q 1 -t "$T/errors" -E -W "$TIMEOUT"
log "acknowledging: $ACK"
mqtt operational 'acknowledgement' mosquitto_rr "${TLS_OPERATIONAL[@]}" -c -q 1 -e "$T/state" -t "$T/config/ack" -m "$ACK" -v -W "$TIMEOUT"
read -r TOPIC STATE_MSG <"$W/out" || true
# leave no persistent session behind (clean session, subscribe, disconnect)
mqtt operational 'session cleanup' mosquitto_sub "${TLS_OPERATIONAL[@]}" -q 1 -t "$T/state" -E -W "$TIMEOUT"
case $TOPIC in
  "$T/state") ;;
  "$T/errors") die 4 "the service rejected the acknowledgement: $(jq -r '"\(.code): \(.message)"' <<<"$STATE_MSG")" ;;
  *) die 1 "unexpected answer on '$TOPIC': $STATE_MSG" ;;
esac
[[ -z $FAILED ]] || die 5 "acknowledged a failed item ($FAILED); service state: $STATE_MSG"
STATE=$(jq -r .state <<<"$STATE_MSG")
log "state: $STATE_MSG"
[[ $STATE == provisioned ]] || die 4 "device is $STATE, pending: $(jq -c .pending <<<"$STATE_MSG")"
printf 'STATE=%s\n' "$STATE"
