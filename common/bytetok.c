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

int bytetok_decode_response(const int *tokens, int n, int vocab, char *out, size_t cap) {
    static const char repl[] = "\xEF\xBF\xBD"; // U+FFFD
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int t = tokens[i];
        if (t < 0 || t >= vocab)
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
