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

// One loop for both token types: a negative int token becomes a huge uint32_t and is refused
// as out of the vocabulary; the type test is loop-invariant (the compiler unswitches it).
static int decode(const int *itok, const uint32_t *utok, int n, int vocab, char *out, size_t cap) {
    static const char repl[] = "\xEF\xBF\xBD"; // U+FFFD
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        uint32_t t = utok ? utok[i] : (uint32_t)itok[i];
        if (t >= (uint32_t)vocab)
            return -1;
        if (t == GPT_TOK_EOS)
            break;
        if (t < 256) {
            if (k + 1 < cap)
                out[k++] = (char)t;
        } else if (k + 3 < cap) {
            memcpy(out + k, repl, 3);
            k += 3;
        }
    }
    out[k] = 0;
    return (int)k;
}

int bytetok_decode_response(const int *tokens, int n, int vocab, char *out, size_t cap) {
    return decode(tokens, NULL, n, vocab, out, cap);
}

int bytetok_decode_wire(const uint32_t *tokens, int n, int vocab, char *out, size_t cap) {
    return decode(NULL, tokens, n, vocab, out, cap);
}
