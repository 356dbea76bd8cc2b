// AES-GCM for ESP (RFC 4106) with OpenSSL's EVP interface, from the OpenSSL that Node
// itself exports, one N-API call per batch.
//
// JS API (see src/esp/native-esp-cipher.ts):
//   gcmCreate() -> table
//   gcmAddKey(table, key, salt) -> handle          16- or 32-byte key, 4-byte salt
//   gcmRemoveKey(table, handle)
//   gcmExportKey(table, handle, out) -> key length  key then salt written to out (>= 36 bytes);
//                                                   0 when the handle is not installed
//   gcmKeyCount(table) -> keys installed
//   gcmSeal(table, buf, key, espOff, ptLen, seqHi, ok, count)
//   gcmOpen(table, buf, key, espOff, ptLen, seqHi, ok, count)
//
// Job j is the ESP packet at buf[espOff[j]] (layout in src/wire/esp.ts):
//   nonce = salt | IV (esp+8, 8 bytes)                       RFC 4106 4
//   AAD   = SPI | seqHi[j] (big-endian) | seq low (esp+4)    RFC 4106 5 (ESN)
//   text  = ptLen[j] bytes at esp+16, ICV (16 bytes) right after it
//   ok[j] = 1 when job j was sealed (its ICV written) or opened (its ICV verified), else 0;
//           a failed seal leaves the plaintext, and the caller must not send that packet
// Both calls throw, before touching any job, only for a broken invariant (a key handle not
// installed, a job outside the buffer); a failure of one job is reported in ok[j].
//
// Each key gets an EVP_CIPHER_CTX for the direction it is used in, keyed once when first
// used (an SA only ever seals or only ever opens); per packet only the nonce is set
// (EVP_*Init_ex with a NULL cipher and key keeps the key schedule).
// open() decrypts into a scratch buffer and copies the plaintext over the ciphertext only
// when the ICV verifies, so a forged packet leaves the buffer as it was.

#include "napi_util.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

enum { SALT_LEN = 4, IV_LEN = 8, ESP_HLEN = 16, ICV_LEN = 16, OFF_SPI = 0, OFF_SEQ = 4, OFF_IV = 8 };
/** Largest ESP plaintext: an IPv4 packet cannot carry more. */
enum { MAX_TEXT = 65535 };

typedef struct {
  EVP_CIPHER_CTX *enc;  // made by the first seal
  EVP_CIPHER_CTX *dec;  // made by the first open
  uint8_t key[32];
  uint8_t key_len;
  uint8_t salt[SALT_LEN];
  int used;
} gcm_key;

typedef struct {
  gcm_key *keys;
  uint32_t cap;
  uint32_t hint;     // no free slot below it: adds are O(1) amortized
  uint32_t count;    // keys installed
  uint8_t *scratch;  // MAX_TEXT bytes, for open()
} gcm_table;

static void key_clear(gcm_key *k) {
  // EVP_CIPHER_CTX_free cleanses the key schedule (OPENSSL_clear_free of the cipher state).
  EVP_CIPHER_CTX_free(k->enc);
  EVP_CIPHER_CTX_free(k->dec);
  OPENSSL_cleanse(k->key, sizeof k->key);
  OPENSSL_cleanse(k->salt, sizeof k->salt);
  k->enc = k->dec = NULL;
  k->used = 0;
}

static void table_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  gcm_table *t = data;
  for (uint32_t h = 0; h < t->cap; h++) {
    if (t->keys[h].used) key_clear(&t->keys[h]);
  }
  free(t->keys);
  OPENSSL_cleanse(t->scratch, MAX_TEXT);
  free(t->scratch);
  free(t);
}

static int get_table(napi_env env, napi_value v, gcm_table **out) {
  void *data = NULL;
  napi_valuetype type;
  napi_typeof(env, v, &type);
  if (type != napi_external || napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    nvi_throw_type(env, "expected a GCM key table");
    return -1;
  }
  *out = data;
  return 0;
}

static napi_value gcm_create(napi_env env, napi_callback_info info) {
  (void)info;
  gcm_table *t = calloc(1, sizeof *t);
  uint8_t *scratch = malloc(MAX_TEXT);
  if (t == NULL || scratch == NULL) {
    free(t);
    free(scratch);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  t->scratch = scratch;
  napi_value external;
  if (napi_create_external(env, t, table_finalize, NULL, &external) != napi_ok) {
    table_finalize(env, t, NULL);
    return NULL;
  }
  return external;
}

static EVP_CIPHER_CTX *keyed_ctx(const EVP_CIPHER *cipher, const uint8_t *key, int enc) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (ctx == NULL) return NULL;
  // The 12-byte nonce is GCM's default IV length; the key schedule is computed here once.
  if (EVP_CipherInit_ex(ctx, cipher, NULL, key, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

/** The key's context for one direction, keyed on first use; NULL if OpenSSL cannot make it. */
static EVP_CIPHER_CTX *ctx_for(gcm_key *k, int enc) {
  EVP_CIPHER_CTX **slot = enc ? &k->enc : &k->dec;
  if (*slot == NULL) *slot = keyed_ctx(k->key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(), k->key, enc);
  return *slot;
}

static napi_value gcm_add_key(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  gcm_table *t;
  uint8_t *key, *salt;
  size_t key_len, salt_len;
  if (nvi_args(env, info, 3, argv) || get_table(env, argv[0], &t) ||
      nvi_bytes(env, argv[1], "key", &key, &key_len) || nvi_bytes(env, argv[2], "salt", &salt, &salt_len)) {
    return NULL;
  }
  if ((key_len != 16 && key_len != 32) || salt_len != SALT_LEN) {
    nvi_throw_range(env, "AES-GCM needs a 16- or 32-byte key and a %d-byte salt, got %zu and %zu", SALT_LEN,
                    key_len, salt_len);
    return NULL;
  }
  uint32_t h = t->hint;
  while (h < t->cap && t->keys[h].used) h++;
  if (h == t->cap) {
    uint32_t cap = t->cap ? t->cap * 2 : 16;
    gcm_key *keys = realloc(t->keys, cap * sizeof *keys);
    if (keys == NULL) {
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    memset(keys + t->cap, 0, (cap - t->cap) * sizeof *keys);
    t->keys = keys;
    t->cap = cap;
  }
  gcm_key *k = &t->keys[h];
  memcpy(k->key, key, key_len);
  k->key_len = (uint8_t)key_len;
  memcpy(k->salt, salt, SALT_LEN);
  k->used = 1;
  t->hint = h + 1;
  t->count++;
  return nvi_int(env, (int32_t)h);
}

static napi_value gcm_remove_key(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  gcm_table *t;
  int32_t h;
  if (nvi_args(env, info, 2, argv) || get_table(env, argv[0], &t) || nvi_i32(env, argv[1], "handle", &h)) {
    return NULL;
  }
  if (h >= 0 && (uint32_t)h < t->cap && t->keys[h].used) {
    key_clear(&t->keys[h]);
    if ((uint32_t)h < t->hint) t->hint = (uint32_t)h;
    t->count--;
  }
  return nvi_undefined(env);
}

/** The key and salt of an installed handle, for a handover: the only copy of them is here. */
static napi_value gcm_export_key(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  gcm_table *t;
  int32_t h;
  uint8_t *out;
  size_t out_len;
  if (nvi_args(env, info, 3, argv) || get_table(env, argv[0], &t) || nvi_i32(env, argv[1], "handle", &h) ||
      nvi_bytes(env, argv[2], "out", &out, &out_len)) {
    return NULL;
  }
  if (out_len < sizeof t->keys[0].key + SALT_LEN) {
    nvi_throw_range(env, "gcmExportKey needs %zu bytes to write into, got %zu", sizeof t->keys[0].key + SALT_LEN, out_len);
    return NULL;
  }
  if (h < 0 || (uint32_t)h >= t->cap || !t->keys[h].used) return nvi_int(env, 0);
  const gcm_key *k = &t->keys[h];
  memcpy(out, k->key, k->key_len);
  memcpy(out + k->key_len, k->salt, SALT_LEN);
  return nvi_int(env, k->key_len);
}

static napi_value gcm_key_count(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  gcm_table *t;
  if (nvi_args(env, info, 1, argv) || get_table(env, argv[0], &t)) return NULL;
  return nvi_int(env, (int32_t)t->count);
}

/** The arrays of one batch of jobs, checked against the buffer before any work. */
typedef struct {
  gcm_table *t;
  uint8_t *buf;
  const int32_t *key, *esp_off, *pt_len;
  const uint32_t *seq_hi;
  uint8_t *ok;
  int32_t count;
} jobs;

static int get_jobs(napi_env env, napi_callback_info info, jobs *J) {
  napi_value argv[8];
  size_t buf_len, n_key, n_off, n_len, n_hi, n_ok;
  if (nvi_args(env, info, 8, argv) || get_table(env, argv[0], &J->t) ||
      nvi_bytes(env, argv[1], "buf", &J->buf, &buf_len) ||
      nvi_i32_array(env, argv[2], "key", (int32_t **)&J->key, &n_key) ||
      nvi_i32_array(env, argv[3], "espOff", (int32_t **)&J->esp_off, &n_off) ||
      nvi_i32_array(env, argv[4], "ptLen", (int32_t **)&J->pt_len, &n_len) ||
      nvi_u32_array(env, argv[5], "seqHi", (uint32_t **)&J->seq_hi, &n_hi) ||
      nvi_bytes(env, argv[6], "ok", &J->ok, &n_ok) || nvi_i32(env, argv[7], "count", &J->count)) {
    return -1;
  }
  size_t c = (size_t)(J->count < 0 ? 0 : J->count);
  if (J->count < 0 || c > n_key || c > n_off || c > n_len || c > n_hi || c > n_ok) {
    nvi_throw_range(env, "job count %d exceeds the job arrays", J->count);
    return -1;
  }
  for (int32_t j = 0; j < J->count; j++) {
    int32_t h = J->key[j];
    if (h < 0 || (uint32_t)h >= J->t->cap || !J->t->keys[h].used) {
      napi_throw_error(env, NULL, "ESP key handle is not installed");
      return -1;
    }
    int64_t off = J->esp_off[j], len = J->pt_len[j];
    if (off < 0 || len < 0 || len > MAX_TEXT || off + ESP_HLEN + len + ICV_LEN > (int64_t)buf_len) {
      nvi_throw_range(env, "ESP job %d (offset %lld, length %lld) lies outside the buffer", j, (long long)off,
                      (long long)len);
      return -1;
    }
  }
  return 0;
}

static void nonce_and_aad(const gcm_key *k, const uint8_t *esp, uint32_t seq_hi, uint8_t nonce[12], uint8_t aad[12]) {
  memcpy(nonce, k->salt, SALT_LEN);
  memcpy(nonce + SALT_LEN, esp + OFF_IV, IV_LEN);
  memcpy(aad, esp + OFF_SPI, 4);
  aad[4] = (uint8_t)(seq_hi >> 24);
  aad[5] = (uint8_t)(seq_hi >> 16);
  aad[6] = (uint8_t)(seq_hi >> 8);
  aad[7] = (uint8_t)seq_hi;
  memcpy(aad + 8, esp + OFF_SEQ, 4);
}

static napi_value gcm_seal(napi_env env, napi_callback_info info) {
  jobs J;
  if (get_jobs(env, info, &J)) return NULL;
  uint8_t nonce[12], aad[12];
  for (int32_t j = 0; j < J.count; j++) {
    gcm_key *k = &J.t->keys[J.key[j]];
    uint8_t *esp = J.buf + J.esp_off[j];
    uint8_t *text = esp + ESP_HLEN;
    int n = J.pt_len[j], outl;
    nonce_and_aad(k, esp, J.seq_hi[j], nonce, aad);
    EVP_CIPHER_CTX *c = ctx_for(k, 1);
    int good = c != NULL && EVP_EncryptInit_ex(c, NULL, NULL, NULL, nonce) == 1 &&
               EVP_EncryptUpdate(c, NULL, &outl, aad, sizeof aad) == 1 &&
               (n == 0 || EVP_EncryptUpdate(c, text, &outl, text, n) == 1) &&
               EVP_EncryptFinal_ex(c, text + n, &outl) == 1 &&
               EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, ICV_LEN, text + n) == 1;
    J.ok[j] = good ? 1 : 0;
  }
  return nvi_undefined(env);
}

static napi_value gcm_open(napi_env env, napi_callback_info info) {
  jobs J;
  if (get_jobs(env, info, &J)) return NULL;
  uint8_t nonce[12], aad[12];
  uint8_t *scratch = J.t->scratch;
  for (int32_t j = 0; j < J.count; j++) {
    gcm_key *k = &J.t->keys[J.key[j]];
    uint8_t *esp = J.buf + J.esp_off[j];
    uint8_t *text = esp + ESP_HLEN;
    int n = J.pt_len[j], outl;
    nonce_and_aad(k, esp, J.seq_hi[j], nonce, aad);
    EVP_CIPHER_CTX *c = ctx_for(k, 0);
    int good = c != NULL && EVP_DecryptInit_ex(c, NULL, NULL, NULL, nonce) == 1 &&
               EVP_DecryptUpdate(c, NULL, &outl, aad, sizeof aad) == 1 &&
               (n == 0 || EVP_DecryptUpdate(c, scratch, &outl, text, n) == 1) &&
               EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, ICV_LEN, text + n) == 1 &&
               EVP_DecryptFinal_ex(c, scratch + n, &outl) == 1;  // 1 only when the ICV verifies
    if (good) memcpy(text, scratch, (size_t)n);
    J.ok[j] = good ? 1 : 0;
  }
  return nvi_undefined(env);
}

int nvi_init_esp_gcm(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "gcmCreate", gcm_create) || nvi_export(env, exports, "gcmAddKey", gcm_add_key) ||
         nvi_export(env, exports, "gcmRemoveKey", gcm_remove_key) ||
         nvi_export(env, exports, "gcmExportKey", gcm_export_key) || nvi_export(env, exports, "gcmKeyCount", gcm_key_count) || nvi_export(env, exports, "gcmSeal", gcm_seal) ||
         nvi_export(env, exports, "gcmOpen", gcm_open);
}
