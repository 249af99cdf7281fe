// bytetok.c: see bytetok.h.
#include "bytetok.h"

#include <string.h>

#include "gpt.h"

int bytetok_encode_prompt(const char *text, size_t len, int *out, int cap) {
    int n = 0;
    if (n < cap)
        out[n] = GPT_TOK_BOS;
    n++;
    for (size_t i = 0; i < len; i++, n++)
        if (n < cap)
            out[n] = (unsigned char)text[i];
    return n;
}

static const char repl[] = "\xEF\xBF\xBD"; // U+FFFD

static size_t put_repl(char *out, size_t k, size_t cap) {
    if (k + 3 < cap) {
        memcpy(out + k, repl, 3);
        k += 3;
    }
    return k;
}

// One loop for both token types: a negative int token becomes a huge uint32_t and is refused
// as out of the vocabulary; the type test is loop-invariant (the compiler unswitches it).
// Bytes are checked as UTF-8 (Unicode 3-7: no overlong forms, no surrogates, at most
// U+10FFFF); an ill-formed sequence becomes U+FFFD, one per maximal subpart (as Python's
// errors="replace" and the WHATWG decoder do), so the output is always valid UTF-8.
static int decode(const int *itok, const uint32_t *utok, int n, int vocab, char *out, size_t cap) {
#define TOK(j) (utok ? utok[j] : (uint32_t)itok[j])
    size_t k = 0;
    int i = 0;
    while (i < n) {
        uint32_t t = TOK(i);
        if (t >= (uint32_t)vocab)
            return -1;
        if (t == GPT_TOK_EOS)
            break;
        if (t < 0x80) { // ASCII: the common case
            if (k + 1 < cap)
                out[k++] = (char)t;
            i++;
            continue;
        }
        int need;                               // continuation bytes after the lead byte t
        uint32_t lo = 0x80, hi = 0xBF;          // range of the first continuation byte
        if (t >= 256 || t < 0xC2 || t > 0xF4) { // special token, stray continuation, bad lead
            k = put_repl(out, k, cap);
            i++;
            continue;
        } else if (t <= 0xDF) {
            need = 1;
        } else if (t <= 0xEF) {
            need = 2;
            lo = t == 0xE0 ? 0xA0 : 0x80;
            hi = t == 0xED ? 0x9F : 0xBF;
        } else {
            need = 3;
            lo = t == 0xF0 ? 0x90 : 0x80;
            hi = t == 0xF4 ? 0x8F : 0xBF;
        }
        int j = 1; // a token >= vocab or EOS is outside [lo, hi]: the next turn handles it
        for (; j <= need && i + j < n; j++) {
            uint32_t u = TOK(i + j);
            if (u < lo || u > hi)
                break;
            lo = 0x80;
            hi = 0xBF;
        }
        if (j == need + 1) {
            if (k + (size_t)j < cap)
                for (int q = 0; q < j; q++)
                    out[k++] = (char)TOK(i + q);
        } else {
            k = put_repl(out, k, cap);
        }
        i += j;
    }
    out[k] = 0;
    return (int)k;
#undef TOK
}

int bytetok_decode_response(const int *tokens, int n, int vocab, char *out, size_t cap) {
    return decode(tokens, NULL, n, vocab, out, cap);
}

int bytetok_decode_wire(const uint32_t *tokens, int n, int vocab, char *out, size_t cap) {
    return decode(NULL, tokens, n, vocab, out, cap);
}
