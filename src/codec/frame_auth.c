/* HMAC-SHA256 for authenticated file-transfer frames (OpenSSL EVP_MAC). */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "tcpkit/frame.h"

struct tk_frame_mac {
    EVP_MAC_CTX *ctx; /* keyed once; re-initialised per frame */
    uint64_t seq;
};

static EVP_MAC_CTX *new_ctx(const unsigned char *key, size_t key_len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!mac)
        return NULL;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac); /* the context holds its own reference */
    if (!ctx)
        return NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(ctx, key, key_len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* HMAC(key, label || a || b) into out. */
static int hmac3(const unsigned char *key, size_t key_len, const char *label,
                 const unsigned char *a, size_t alen, const unsigned char *b, size_t blen,
                 unsigned char out[TK_FRAME_TAG])
{
    EVP_MAC_CTX *ctx = new_ctx(key, key_len);
    if (!ctx)
        return -EIO;
    size_t outl = 0;
    int ok = EVP_MAC_update(ctx, (const unsigned char *)label, strlen(label)) == 1 &&
             EVP_MAC_update(ctx, a, alen) == 1 && EVP_MAC_update(ctx, b, blen) == 1 &&
             EVP_MAC_final(ctx, out, &outl, TK_FRAME_TAG) == 1 && outl == TK_FRAME_TAG;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -EIO;
}

int tk_frame_derive_keys(const unsigned char *psk, size_t psk_len,
                         const unsigned char client_hello[TK_HELLO_LEN],
                         const unsigned char server_nonce[TK_FRAME_NONCE],
                         unsigned char c2s[TK_FRAME_TAG], unsigned char s2c[TK_FRAME_TAG])
{
    if (hmac3(psk, psk_len, "tcpkit files v2 c2s", client_hello, TK_HELLO_LEN, server_nonce,
              TK_FRAME_NONCE, c2s) < 0)
        return -EIO;
    return hmac3(psk, psk_len, "tcpkit files v2 s2c", client_hello, TK_HELLO_LEN, server_nonce,
                 TK_FRAME_NONCE, s2c);
}

int tk_frame_mac_new(const unsigned char key[TK_FRAME_TAG], tk_frame_mac **out)
{
    tk_frame_mac *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->ctx = new_ctx(key, TK_FRAME_TAG);
    if (!m->ctx) {
        free(m);
        return -EIO;
    }
    *out = m;
    return 0;
}

void tk_frame_mac_free(tk_frame_mac *m)
{
    if (!m)
        return;
    EVP_MAC_CTX_free(m->ctx); /* clears the key it holds */
    free(m);
}

static int compute(tk_frame_mac *m, const unsigned char *hdr, const unsigned char *body, size_t n,
                   unsigned char tag[TK_FRAME_TAG])
{
    unsigned char seq[8];
    tk_put_u64(seq, m->seq++);
    size_t outl = 0;
    /* A NULL key re-initialises the context with the key it already has. */
    int ok = EVP_MAC_init(m->ctx, NULL, 0, NULL) == 1 && EVP_MAC_update(m->ctx, seq, 8) == 1 &&
             EVP_MAC_update(m->ctx, hdr, TK_FRAME_HEADER) == 1 &&
             (n == 0 || EVP_MAC_update(m->ctx, body, n) == 1) &&
             EVP_MAC_final(m->ctx, tag, &outl, TK_FRAME_TAG) == 1 && outl == TK_FRAME_TAG;
    return ok ? 0 : -EIO;
}

int tk_frame_mac_sign(tk_frame_mac *m, const unsigned char *hdr, const unsigned char *body,
                      size_t n, unsigned char tag[TK_FRAME_TAG])
{
    return compute(m, hdr, body, n, tag);
}

int tk_frame_mac_verify(tk_frame_mac *m, const unsigned char *hdr, const unsigned char *body,
                        size_t n, const unsigned char tag[TK_FRAME_TAG])
{
    unsigned char want[TK_FRAME_TAG];
    if (compute(m, hdr, body, n, want) < 0)
        return -EBADMSG;
    int bad = CRYPTO_memcmp(want, tag, TK_FRAME_TAG) != 0;
    OPENSSL_cleanse(want, sizeof(want));
    return bad ? -EBADMSG : 0;
}
