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
//   gcmContextCount(table) -> OpenSSL contexts alive (one per key in use)
//   gcmTableBytes(table) -> bytes of the key table (its slots, used or free)
//   gcmTrim(table, idle, maxKeys) -> contexts freed   one pass: frees the contexts of keys not
//                                                   used in the last `idle` passes, looking at
//                                                   up to maxKeys slots (the table's size at
//                                                   most) from where the last pass stopped
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
// Each key gets one EVP_CIPHER_CTX, keyed when first used; per packet only the nonce and the
// direction are set (EVP_*Init_ex with a NULL cipher and key keeps the key schedule, which
// GCM uses both ways). A context costs about 1.1 KB, so only keys in use keep theirs:
// gcmTrim (the host's sweep, every 250 ms) frees the contexts of keys idle for a while, and
// the next packet makes it again from the key. A key's entry is 48 bytes.
// open() decrypts into a scratch buffer and copies the plaintext over the ciphertext only
// when the ICV verifies, so a forged packet leaves the buffer as it was.

#include "napi_util.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

enum { SALT_LEN = 4, IV_LEN = 8, ESP_HLEN = 16, ICV_LEN = 16, OFF_SPI = 0, OFF_SEQ = 4, OFF_IV = 8 };
/** Largest ESP plaintext: an IPv4 packet cannot carry more. */
enum { MAX_TEXT = 65535 };
/** Contexts freed (about 1.1 KB each) from which a trim pass has the allocator give memory back to the system. */
enum { TRIM_RETURN = 1024 };

typedef struct {
  EVP_CIPHER_CTX *ctx;  // made by the first seal or open (again after a trim)
  uint8_t key[32];
  uint8_t salt[SALT_LEN];
  uint16_t last;  // the trim pass it was last used in, modulo 2^16 (idle is far less)
  uint8_t key_len;
  uint8_t used;
} gcm_key;
_Static_assert(sizeof(gcm_key) == 48, "a key's entry is 48 bytes (a million SAs: 48 MB)");

typedef struct {
  gcm_key *keys;
  uint32_t cap;
  uint32_t hint;      // no free slot below it: adds are O(1) amortized
  uint32_t count;     // keys installed
  uint32_t contexts;  // EVP contexts alive
  uint32_t pass;      // trim passes so far
  uint32_t trim_at;   // where the next trim pass goes on
  uint32_t unreturned;  // contexts freed since the allocator last gave memory back
  uint8_t *scratch;   // MAX_TEXT bytes, for open()
} gcm_table;

/** Free the key's context (EVP_CIPHER_CTX_free cleanses the key schedule); returns 1 if it had one. */
static uint32_t free_context(gcm_key *k) {
  if (k->ctx == NULL) return 0;
  EVP_CIPHER_CTX_free(k->ctx);
  k->ctx = NULL;
  return 1;
}

static void key_clear(gcm_table *t, gcm_key *k) {
  t->contexts -= free_context(k);
  OPENSSL_cleanse(k->key, sizeof k->key);
  OPENSSL_cleanse(k->salt, sizeof k->salt);
  k->used = 0;
}

static void table_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  gcm_table *t = data;
  for (uint32_t h = 0; h < t->cap; h++) {
    if (t->keys[h].used) key_clear(t, &t->keys[h]);
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

/** The key's context, keyed on first use; NULL if OpenSSL cannot make it. Marks the key used in this pass. */
static EVP_CIPHER_CTX *ctx_for(gcm_table *t, gcm_key *k, int enc) {
  k->last = (uint16_t)t->pass;
  if (k->ctx == NULL) {
    k->ctx = keyed_ctx(k->key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(), k->key, enc);
    if (k->ctx != NULL) t->contexts++;
  }
  return k->ctx;
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
    key_clear(t, &t->keys[h]);
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

/** Jobs ahead whose context a seal or open fetches into the cache while it works on the current one. */
enum { PREFETCH_AHEAD = 4, PREFETCH_LINES = 4 };

/** Start fetching the context of job j (if any, and if the key has one) into the cache. */
static inline void prefetch_ctx(const jobs *J, int32_t j) {
  if (j >= J->count) return;
  const char *c = (const char *)J->t->keys[J->key[j]].ctx;
  if (c == NULL) return;
  for (int l = 0; l < PREFETCH_LINES; l++) __builtin_prefetch(c + 64 * l);
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
  for (int32_t j = 0; j < PREFETCH_AHEAD; j++) prefetch_ctx(&J, j);
  for (int32_t j = 0; j < J.count; j++) {
    prefetch_ctx(&J, j + PREFETCH_AHEAD);
    gcm_key *k = &J.t->keys[J.key[j]];
    uint8_t *esp = J.buf + J.esp_off[j];
    uint8_t *text = esp + ESP_HLEN;
    int n = J.pt_len[j], outl;
    nonce_and_aad(k, esp, J.seq_hi[j], nonce, aad);
    EVP_CIPHER_CTX *c = ctx_for(J.t, k, 1);
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
  for (int32_t j = 0; j < PREFETCH_AHEAD; j++) prefetch_ctx(&J, j);
  for (int32_t j = 0; j < J.count; j++) {
    prefetch_ctx(&J, j + PREFETCH_AHEAD);
    gcm_key *k = &J.t->keys[J.key[j]];
    uint8_t *esp = J.buf + J.esp_off[j];
    uint8_t *text = esp + ESP_HLEN;
    int n = J.pt_len[j], outl;
    nonce_and_aad(k, esp, J.seq_hi[j], nonce, aad);
    EVP_CIPHER_CTX *c = ctx_for(J.t, k, 0);
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

static napi_value gcm_table_bytes(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  gcm_table *t;
  if (nvi_args(env, info, 1, argv) || get_table(env, argv[0], &t)) return NULL;
  napi_value v;
  return napi_create_double(env, (double)t->cap * sizeof(gcm_key), &v) == napi_ok ? v : NULL;
}

static napi_value gcm_context_count(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  gcm_table *t;
  if (nvi_args(env, info, 1, argv) || get_table(env, argv[0], &t)) return NULL;
  return nvi_int(env, (int32_t)t->contexts);
}

/** One trim pass: free the contexts of keys not used in the last `idle` passes, among up to maxKeys keys. */
static napi_value gcm_trim(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  gcm_table *t;
  int32_t idle, max_keys;
  if (nvi_args(env, info, 3, argv) || get_table(env, argv[0], &t) || nvi_i32(env, argv[1], "idle", &idle) ||
      nvi_i32(env, argv[2], "maxKeys", &max_keys)) {
    return NULL;
  }
  if (idle < 1 || idle > 0x7fff || max_keys < 0) {
    nvi_throw_range(env, "gcmTrim needs 1 <= idle <= 32767 passes and maxKeys >= 0, got %d and %d", idle, max_keys);
    return NULL;
  }
  t->pass++;
  uint32_t freed = 0;
  for (uint32_t seen = 0; seen < (uint32_t)max_keys && seen < t->cap; seen++) {
    if (t->trim_at >= t->cap) t->trim_at = 0;
    gcm_key *k = &t->keys[t->trim_at++];
    if (!k->used || k->ctx == NULL || (uint16_t)((uint16_t)t->pass - k->last) < idle) continue;
    freed += free_context(k);
  }
  t->contexts -= freed;
  t->unreturned += freed;
#ifdef __GLIBC__
  // Freed 1-KB chunks stay in the allocator's heap (and in the RSS) until it is trimmed.
  if (t->unreturned >= TRIM_RETURN) {
    malloc_trim(0);
    t->unreturned = 0;
  }
#endif
  return nvi_int(env, (int32_t)freed);
}

int nvi_init_esp_gcm(napi_env env, napi_value exports) {
  return nvi_export(env, exports, "gcmCreate", gcm_create) || nvi_export(env, exports, "gcmAddKey", gcm_add_key) ||
         nvi_export(env, exports, "gcmRemoveKey", gcm_remove_key) ||
         nvi_export(env, exports, "gcmExportKey", gcm_export_key) || nvi_export(env, exports, "gcmKeyCount", gcm_key_count) || nvi_export(env, exports, "gcmSeal", gcm_seal) ||
         nvi_export(env, exports, "gcmOpen", gcm_open) || nvi_export(env, exports, "gcmContextCount", gcm_context_count) ||
         nvi_export(env, exports, "gcmTrim", gcm_trim) || nvi_export(env, exports, "gcmTableBytes", gcm_table_bytes);
}
