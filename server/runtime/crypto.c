/* Crypto helpers for modules (ABI 3), over libsodium: digests, MACs,
 * constant-time comparison, random bytes, password hashing and signed
 * tokens. Results are hex or base64url text owned by the request. */
#define _GNU_SOURCE
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime.h"

static char *hex(hp_request *req, const unsigned char *bin, size_t n)
{
    char *out = rt_arena_alloc(&req->arena, 2 * n + 1);
    return out ? sodium_bin2hex(out, 2 * n + 1, bin, n) : NULL;
}

static void mac(unsigned char out[crypto_auth_hmacsha256_BYTES], const char *key, const void *data, size_t len)
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)key, strlen(key));
    crypto_auth_hmacsha256_update(&st, data, len);
    crypto_auth_hmacsha256_final(&st, out);
}

char *rt_api_sha256_hex(hp_request *req, const void *data, size_t len)
{
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, data, len);
    return hex(req, d, sizeof d);
}

char *rt_api_hmac_sha256_hex(hp_request *req, const char *key, const void *data, size_t len)
{
    unsigned char d[crypto_auth_hmacsha256_BYTES];
    mac(d, key, data, len);
    return hex(req, d, sizeof d);
}

int rt_api_equal(const void *a, const void *b, size_t len)
{
    return sodium_memcmp(a, b, len) == 0;
}

void rt_api_random(void *out, size_t len)
{
    randombytes_buf(out, len);
}

char *rt_api_password_hash(hp_request *req, const char *password)
{
    char *out = rt_arena_alloc(&req->arena, crypto_pwhash_STRBYTES);
    if (!out || crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                  crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return NULL;
    return out;
}

int rt_api_password_verify(const char *hash, const char *password)
{
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

/* A token is base64url(payload) "." expiry "." base64url(HMAC of the first two parts). */
char *rt_api_token_sign(hp_request *req, const char *key, const char *payload, long ttl_seconds)
{
    size_t plen = strlen(payload), b64 = sodium_base64_ENCODED_LEN(plen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t mlen = sodium_base64_ENCODED_LEN(crypto_auth_hmacsha256_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = rt_arena_alloc(&req->arena, b64 + 24 + mlen);
    if (!out)
        return NULL;
    sodium_bin2base64(out, b64, (const unsigned char *)payload, plen, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    size_t n = strlen(out);
    n += (size_t)snprintf(out + n, 24, ".%ld", (long)time(NULL) + ttl_seconds);
    unsigned char d[crypto_auth_hmacsha256_BYTES];
    mac(d, key, out, n);
    out[n++] = '.';
    sodium_bin2base64(out + n, mlen, d, sizeof d, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

const char *rt_api_token_verify(hp_request *req, const char *key, const char *token)
{
    const char *dot1 = strchr(token, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    if (!dot2 || strchr(dot2 + 1, '.'))
        return NULL;
    unsigned char want[crypto_auth_hmacsha256_BYTES], got[crypto_auth_hmacsha256_BYTES];
    size_t got_len = 0;
    mac(want, key, token, (size_t)(dot2 - token));
    if (sodium_base642bin(got, sizeof got, dot2 + 1, strlen(dot2 + 1), NULL, &got_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || got_len != sizeof got ||
        sodium_memcmp(got, want, sizeof got) != 0)
        return NULL;
    char *end;
    long expiry = strtol(dot1 + 1, &end, 10);
    if (end != dot2 || expiry < (long)time(NULL))
        return NULL;
    size_t b64 = (size_t)(dot1 - token), plen = 0;
    char *payload = rt_arena_alloc(&req->arena, b64 + 1);
    if (!payload || sodium_base642bin((unsigned char *)payload, b64, token, b64, NULL, &plen, NULL,
                                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return NULL;
    payload[plen] = 0;
    return payload;
}
