/*
** crypto.c — the little cryptography the node handshake needs, all of it
** OpenSSL's (nothing here is written by hand): HMAC-SHA256, random bytes
** from the OS-seeded CSPRNG, and a comparison whose time does not depend
** on where two strings differ. No allocation outlives a call. Part of
** the luacomm.tls module (tlsmod.h); the core's core.hmac_sha256 and
** friends load it and call these.
*/
#include "tls.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/* Random bytes per call: a nonce is 32; more is a programming error. */
#define LC_RANDOM_MAX 1024

/* core.hmac_sha256(key, data) -> the 32-byte MAC (a binary string). */
int lc_crypto_hmac_sha256 (lua_State *L) {
  size_t klen, dlen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *data = luaL_checklstring(L, 2, &dlen);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)data, dlen, md, &mdlen) == NULL)
    return luaL_error(L, "hmac_sha256: OpenSSL failed");
  lua_pushlstring(L, (const char *)md, mdlen);
  return 1;
}

/* core.random_bytes(n) -> n bytes from RAND_bytes; raises if OpenSSL
** cannot produce them (an unseeded generator must not yield a nonce). */
int lc_crypto_random_bytes (lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  unsigned char buf[LC_RANDOM_MAX];
  luaL_argcheck(L, n >= 0 && n <= LC_RANDOM_MAX, 1, "0 to 1024 bytes");
  if (n > 0 && RAND_bytes(buf, (int)n) != 1) return luaL_error(L, "random_bytes: OpenSSL failed");
  lua_pushlstring(L, (const char *)buf, (size_t)n);
  return 1;
}

/* core.equal_consttime(a, b) -> boolean; time depends on the lengths
** only (lengths are not secret here: a MAC's is fixed). */
int lc_crypto_equal_consttime (lua_State *L) {
  size_t alen, blen;
  const char *a = luaL_checklstring(L, 1, &alen);
  const char *b = luaL_checklstring(L, 2, &blen);
  lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
  return 1;
}
