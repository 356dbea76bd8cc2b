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
// Each key gets one cipher context, keyed when first used; per packet only the nonce and the
// direction are set (the key schedule is kept; GCM uses it both ways). The context is the
// provider's own (OpenSSL 3's provider-cipher interface, found through the EVP cipher Node's
// OpenSSL fetches), not an EVP_CIPHER_CTX around it: its address is ours, so a batch fetches
// the contexts of the jobs ahead into the cache while it works on the current one (with a
// million SAs they are mostly in memory), and no EVP layer runs per call. A context costs
// about 1 KB, so only keys in use keep theirs: gcmTrim (the host's sweep, every 250 ms)
// frees the contexts of keys idle for a while, and the next packet makes it again from the
// key. A key's entry is 48 bytes.
// open() decrypts into a scratch buffer and copies the plaintext over the ciphertext only
// when the ICV verifies, so a forged packet leaves the buffer as it was.

#include "napi_util.h"

#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

enum { SALT_LEN = 4, IV_LEN = 8, ESP_HLEN = 16, ICV_LEN = 16, OFF_SPI = 0, OFF_SEQ = 4, OFF_IV = 8 };
/** Largest ESP plaintext: an IPv4 packet cannot carry more. */
enum { MAX_TEXT = 65535 };
/** Contexts freed (about 1 KB each) from which a trim pass has the allocator give memory back to the system. */
enum { TRIM_RETURN = 1024 };

/** The provider's functions for one AES-GCM key size, and what keeps them valid. */
typedef struct {
  EVP_CIPHER *fetched;  // holds the provider (and so its functions) for the table's life
  void *provctx;
  OSSL_FUNC_cipher_newctx_fn *newctx;
  OSSL_FUNC_cipher_freectx_fn *freectx;
  OSSL_FUNC_cipher_encrypt_init_fn *einit;
  OSSL_FUNC_cipher_decrypt_init_fn *dinit;
  OSSL_FUNC_cipher_update_fn *update;
  OSSL_FUNC_cipher_final_fn *final;
  OSSL_FUNC_cipher_get_ctx_params_fn *get_params;
  OSSL_FUNC_cipher_set_ctx_params_fn *set_params;
} gcm_impl;

typedef struct {
  void *ctx;  // the provider's context, made by the first seal or open (again after a trim)
  uint8_t key[32];
  uint8_t salt[SALT_LEN];
  uint16_t last;  // the trim pass it was last used in, modulo 2^16 (idle is far less)
  uint8_t key_len;
  uint8_t used;
} gcm_key;
_Static_assert(sizeof(gcm_key) == 48, "a key's entry is 48 bytes (a million SAs: 48 MB)");

typedef struct {
  gcm_key *keys;
  gcm_impl aes128, aes256;
  uint32_t cap;
  uint32_t hint;      // no free slot below it: adds are O(1) amortized
  uint32_t count;     // keys installed
  uint32_t contexts;  // EVP contexts alive
  uint32_t pass;      // trim passes so far
  uint32_t trim_at;   // where the next trim pass goes on
  uint32_t unreturned;  // contexts freed since the allocator last gave memory back
  uint8_t *scratch;   // MAX_TEXT bytes, for open()
} gcm_table;

static const gcm_impl *impl_of(const gcm_table *t, const gcm_key *k) {
  return k->key_len == 16 ? &t->aes128 : &t->aes256;
}

/** Free the key's context (the provider cleanses the key schedule); returns 1 if it had one. */
static uint32_t free_context(const gcm_table *t, gcm_key *k) {
  if (k->ctx == NULL) return 0;
  impl_of(t, k)->freectx(k->ctx);
  k->ctx = NULL;
  return 1;
}

static void key_clear(gcm_table *t, gcm_key *k) {
  t->contexts -= free_context(t, k);
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
  EVP_CIPHER_free(t->aes128.fetched);
  EVP_CIPHER_free(t->aes256.fetched);
  if (t->scratch != NULL) OPENSSL_cleanse(t->scratch, MAX_TEXT);
  free(t->scratch);
  free(t);
}

/** True when `name` is the first of the colon-separated names in `names`. */
static int first_name_is(const char *names, const char *name) {
  size_t n = strlen(name);
  return strncasecmp(names, name, n) == 0 && (names[n] == '\0' || names[n] == ':');
}

/**
 * The provider functions of cipher `name` (AES-128-GCM or AES-256-GCM): fetched as EVP would,
 * then looked up among its provider's ciphers. Returns 0, or -1 when a function is missing.
 */
static int find_impl(const char *name, gcm_impl *out) {
  memset(out, 0, sizeof *out);
  out->fetched = EVP_CIPHER_fetch(NULL, name, NULL);
  if (out->fetched == NULL) return -1;
  const OSSL_PROVIDER *prov = EVP_CIPHER_get0_provider(out->fetched);
  out->provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
  int no_cache = 0;
  const OSSL_ALGORITHM *algs = OSSL_PROVIDER_query_operation(prov, OSSL_OP_CIPHER, &no_cache);
  for (const OSSL_ALGORITHM *a = algs; a != NULL && a->algorithm_names != NULL; a++) {
    if (!first_name_is(a->algorithm_names, name)) continue;
    for (const OSSL_DISPATCH *d = a->implementation; d->function_id != 0; d++) {
      switch (d->function_id) {
        case OSSL_FUNC_CIPHER_NEWCTX: out->newctx = OSSL_FUNC_cipher_newctx(d); break;
        case OSSL_FUNC_CIPHER_FREECTX: out->freectx = OSSL_FUNC_cipher_freectx(d); break;
        case OSSL_FUNC_CIPHER_ENCRYPT_INIT: out->einit = OSSL_FUNC_cipher_encrypt_init(d); break;
        case OSSL_FUNC_CIPHER_DECRYPT_INIT: out->dinit = OSSL_FUNC_cipher_decrypt_init(d); break;
        case OSSL_FUNC_CIPHER_UPDATE: out->update = OSSL_FUNC_cipher_update(d); break;
        case OSSL_FUNC_CIPHER_FINAL: out->final = OSSL_FUNC_cipher_final(d); break;
        case OSSL_FUNC_CIPHER_GET_CTX_PARAMS: out->get_params = OSSL_FUNC_cipher_get_ctx_params(d); break;
        case OSSL_FUNC_CIPHER_SET_CTX_PARAMS: out->set_params = OSSL_FUNC_cipher_set_ctx_params(d); break;
        default: break;
      }
    }
    break;
  }
  if (algs != NULL) OSSL_PROVIDER_unquery_operation(prov, OSSL_OP_CIPHER, algs);
  int whole = out->provctx != NULL && out->newctx && out->freectx && out->einit && out->dinit && out->update &&
              out->final && out->get_params && out->set_params;
  return whole ? 0 : -1;
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
  if (find_impl("AES-128-GCM", &t->aes128) || find_impl("AES-256-GCM", &t->aes256)) {
    table_finalize(env, t, NULL);
    napi_throw_error(env, NULL, "OpenSSL has no provider implementation of AES-128-GCM and AES-256-GCM");
    return NULL;
  }
  napi_value external;
  if (napi_create_external(env, t, table_finalize, NULL, &external) != napi_ok) {
    table_finalize(env, t, NULL);
    return NULL;
  }
  return external;
}

/** A provider context with the key's schedule (computed here once); NULL if the provider cannot make it. */
static void *keyed_ctx(const gcm_impl *impl, const gcm_key *k) {
  void *ctx = impl->newctx(impl->provctx);
  if (ctx == NULL) return NULL;
  if (impl->einit(ctx, k->key, k->key_len, NULL, 0, NULL) != 1) {
    impl->freectx(ctx);
    return NULL;
  }
  return ctx;
}

/** The key's context, keyed on first use; NULL if OpenSSL cannot make it. Marks the key used in this pass. */
static void *ctx_for(gcm_table *t, gcm_key *k) {
  k->last = (uint16_t)t->pass;
  if (k->ctx == NULL) {
    k->ctx = keyed_ctx(impl_of(t, k), k);
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

/**
 * Jobs ahead whose key entry, then whose context, a seal or open fetches into the cache while
 * it works on the current one, and the context's lines fetched (the provider's AES-GCM context,
 * key schedule and GHASH table, is about 1 KB: a packet reads most of it).
 */
enum { KEY_AHEAD = 8, CTX_AHEAD = 4, CTX_LINES = 16 };

static inline void prefetch_key(const jobs *J, int32_t j) {
  if (j < J->count) __builtin_prefetch(&J->t->keys[J->key[j]]);
}

static inline void prefetch_ctx(const jobs *J, int32_t j) {
  if (j >= J->count) return;
  const char *c = J->t->keys[J->key[j]].ctx;
  if (c == NULL) return;
  for (int l = 0; l < CTX_LINES; l++) __builtin_prefetch(c + 64 * l);
}

static void prefetch_first(const jobs *J) {
  for (int32_t j = 0; j < KEY_AHEAD; j++) prefetch_key(J, j);
  for (int32_t j = 0; j < CTX_AHEAD; j++) prefetch_ctx(J, j);
}

static void prefetch_next(const jobs *J, int32_t j) {
  prefetch_key(J, j + KEY_AHEAD);
  prefetch_ctx(J, j + CTX_AHEAD);
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

/** Seal `n` bytes at `text` in place with context `c`, the ICV right after them; 1 when done. */
static int seal_one(const gcm_impl *f, void *c, const uint8_t nonce[12], const uint8_t aad[12], uint8_t *text, size_t n) {
  size_t outl;
  OSSL_PARAM tag[2] = { OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, text + n, ICV_LEN), OSSL_PARAM_END };
  return f->einit(c, NULL, 0, nonce, 12, NULL) == 1 && f->update(c, NULL, &outl, 12, aad, 12) == 1 &&
         f->update(c, text, &outl, n, text, n) == 1 && f->final(c, text + n, &outl, ICV_LEN) == 1 &&
         f->get_params(c, tag) == 1;
}

/** Open `n` bytes at `text` into `out` with context `c`, checking the ICV after them; 1 only when it verifies. */
static int open_one(const gcm_impl *f, void *c, const uint8_t nonce[12], const uint8_t aad[12], uint8_t *text, size_t n, uint8_t *out) {
  size_t outl;
  OSSL_PARAM tag[2] = { OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, text + n, ICV_LEN), OSSL_PARAM_END };
  return f->dinit(c, NULL, 0, nonce, 12, NULL) == 1 && f->update(c, NULL, &outl, 12, aad, 12) == 1 &&
         f->update(c, out, &outl, n, text, n) == 1 && f->set_params(c, tag) == 1 &&
         f->final(c, out + n, &outl, ICV_LEN) == 1;
}

static napi_value gcm_seal(napi_env env, napi_callback_info info) {
  jobs J;
  if (get_jobs(env, info, &J)) return NULL;
  uint8_t nonce[12], aad[12];
  prefetch_first(&J);
  for (int32_t j = 0; j < J.count; j++) {
    prefetch_next(&J, j);
    gcm_key *k = &J.t->keys[J.key[j]];
    uint8_t *esp = J.buf + J.esp_off[j];
    nonce_and_aad(k, esp, J.seq_hi[j], nonce, aad);
    void *c = ctx_for(J.t, k);
    J.ok[j] = c != NULL && seal_one(impl_of(J.t, k), c, nonce, aad, esp + ESP_HLEN, (size_t)J.pt_len[j]);
  }
  return nvi_undefined(env);
}

static napi_value gcm_open(napi_env env, napi_callback_info info) {
  jobs J;
  if (get_jobs(env, info, &J)) return NULL;
  uint8_t nonce[12], aad[12];
  uint8_t *scratch = J.t->scratch;
  prefetch_first(&J);
  for (int32_t j = 0; j < J.count; j++) {
    prefetch_next(&J, j);
    gcm_key *k = &J.t->keys[J.key[j]];
    uint8_t *esp = J.buf + J.esp_off[j];
    uint8_t *text = esp + ESP_HLEN;
    size_t n = (size_t)J.pt_len[j];
    nonce_and_aad(k, esp, J.seq_hi[j], nonce, aad);
    void *c = ctx_for(J.t, k);
    int good = c != NULL && open_one(impl_of(J.t, k), c, nonce, aad, text, n, scratch);
    if (good) memcpy(text, scratch, n);
    J.ok[j] = (uint8_t)good;
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
    freed += free_context(t, k);
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
