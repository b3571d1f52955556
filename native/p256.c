/*
 * provisiond_native: ECDSA P-256 / SHA-256 signature verification for CSRs, on the OpenSSL that
 * Node.js itself links (no other library). node:crypto must build an EVP_PKEY for every device
 * key, and under OpenSSL 3.0 that import costs as much as the verification itself (it also
 * checks n*Q = O, which a prime-order curve such as P-256 does not need); here the point is only
 * decoded and checked to be on the curve, then verified with ECDSA_verify.
 *
 * verifyP256(point, data, signature) -> true | false, or -1 when the point is not a valid P-256
 * point (a malformed key). p256Signer(privateScalar) -> a signer whose sign(data) returns the DER
 * ECDSA/SHA-256 signature (the CA's own key, kept as an EC_KEY instead of going through EVP for
 * every certificate). The caller (src/ca/native.ts) falls back to node:crypto when this module
 * cannot be loaded, and test/unit/ca-native.test.ts checks both agree.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <node_api.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

static EC_GROUP *p256 = NULL;

static int buffer_arg(napi_env env, napi_value value, unsigned char **data, size_t *len) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return 0;
  return napi_get_buffer_info(env, value, (void **)data, len) == napi_ok;
}

static napi_value verify_p256(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_value result;
  unsigned char *point, *data, *sig;
  size_t point_len, data_len, sig_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      !buffer_arg(env, argv[0], &point, &point_len) || !buffer_arg(env, argv[1], &data, &data_len) ||
      !buffer_arg(env, argv[2], &sig, &sig_len)) {
    napi_throw_type_error(env, NULL, "verifyP256(point: Buffer, data: Buffer, signature: Buffer)");
    return NULL;
  }
  int ok = 0;
  EC_KEY *key = EC_KEY_new();
  EC_POINT *pt = EC_POINT_new(p256);
  if (key == NULL || pt == NULL || EC_KEY_set_group(key, p256) != 1) {
    ok = -2;
  } else if (EC_POINT_oct2point(p256, pt, point, point_len, NULL) != 1 || EC_POINT_is_at_infinity(p256, pt) ||
             EC_POINT_is_on_curve(p256, pt, NULL) != 1 || EC_KEY_set_public_key(key, pt) != 1) {
    ok = -1;
  } else {
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(data, data_len, md);
    ok = ECDSA_verify(0, md, SHA256_DIGEST_LENGTH, sig, (int)sig_len, key) == 1 ? 1 : 0;
  }
  EC_POINT_free(pt);
  EC_KEY_free(key);
  // a refused point or signature leaves entries on this thread's OpenSSL error queue, which is
  // also node:crypto's: left there, the next unrelated node:crypto call would report them
  ERR_clear_error();
  if (ok == -2) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (ok == -1) napi_create_int32(env, -1, &result);
  else napi_get_boolean(env, ok == 1, &result);
  return result;
}

static void free_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  EC_KEY_free((EC_KEY *)data);
}

/* p256Signer(d: Buffer) -> External holding the EC_KEY (d and its public point) */
static napi_value p256_signer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  unsigned char *d;
  size_t d_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || !buffer_arg(env, argv[0], &d, &d_len) || d_len != 32) {
    napi_throw_type_error(env, NULL, "p256Signer(d: Buffer of 32 bytes)");
    return NULL;
  }
  EC_KEY *key = EC_KEY_new();
  BIGNUM *bn = BN_bin2bn(d, (int)d_len, NULL);
  EC_POINT *pub = EC_POINT_new(p256);
  int ok = key != NULL && bn != NULL && pub != NULL && EC_KEY_set_group(key, p256) == 1 && EC_KEY_set_private_key(key, bn) == 1 &&
           EC_POINT_mul(p256, pub, bn, NULL, NULL, NULL) == 1 && EC_KEY_set_public_key(key, pub) == 1 && EC_KEY_check_key(key) == 1;
  BN_clear_free(bn);
  EC_POINT_free(pub);
  ERR_clear_error();
  if (!ok) {
    EC_KEY_free(key);
    napi_throw_error(env, NULL, "not a valid P-256 private key");
    return NULL;
  }
  napi_value external;
  if (napi_create_external(env, key, free_key, NULL, &external) != napi_ok) {
    EC_KEY_free(key);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  return external;
}

/* signP256(signer: External, data: Buffer) -> DER signature */
static napi_value sign_p256(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  EC_KEY *key = NULL;
  unsigned char *data;
  size_t data_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_external(env, argv[0], (void **)&key) != napi_ok ||
      key == NULL || !buffer_arg(env, argv[1], &data, &data_len)) {
    napi_throw_type_error(env, NULL, "signP256(signer, data: Buffer)");
    return NULL;
  }
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(data, data_len, md);
  unsigned char sig[80];
  unsigned int sig_len = sizeof(sig);
  int ok = ECDSA_size(key) <= (int)sizeof(sig) && ECDSA_sign(0, md, SHA256_DIGEST_LENGTH, sig, &sig_len, key) == 1;
  ERR_clear_error();
  if (!ok) {
    napi_throw_error(env, NULL, "ECDSA signing failed");
    return NULL;
  }
  napi_value out;
  void *copy;
  if (napi_create_buffer_copy(env, sig_len, sig, &copy, &out) != napi_ok) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  if (p256 == NULL) p256 = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
  if (p256 == NULL) {
    napi_throw_error(env, NULL, "P-256 is not available");
    return NULL;
  }
  napi_value fn;
  napi_create_function(env, "verifyP256", NAPI_AUTO_LENGTH, verify_p256, NULL, &fn);
  napi_set_named_property(env, exports, "verifyP256", fn);
  napi_create_function(env, "p256Signer", NAPI_AUTO_LENGTH, p256_signer, NULL, &fn);
  napi_set_named_property(env, exports, "p256Signer", fn);
  napi_create_function(env, "signP256", NAPI_AUTO_LENGTH, sign_p256, NULL, &fn);
  napi_set_named_property(env, exports, "signP256", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
