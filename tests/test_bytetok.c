// test_bytetok.c: the byte-level tokenizer: prompt encoding (BOS + bytes, cut at cap) and
// response decoding from int tokens and from the wire's uint32 tokens (stop at EOS, specials
// as U+FFFD, out-of-vocabulary refused, output cut at cap).
#include <stdio.h>
#include <string.h>

#include "bytetok.h"
#include "gpt.h"
#include "testutil.h"

static void test_encode(void) {
    int out[8];
    int n = bytetok_encode_prompt("12+34=", 6, out, 8);
    TU_CHECK(n == 7 && out[0] == GPT_TOK_BOS && out[1] == '1' && out[6] == '=',
             "encode: n %d, first %d, last %d", n, out[0], out[6]);
    int cut[3] = {-1, -1, -1};
    n = bytetok_encode_prompt("\xc3\xa9x", 3, cut, 2); // UTF-8 bytes, cut after 2 tokens
    TU_CHECK(n == 4 && cut[0] == GPT_TOK_BOS && cut[1] == 0xc3 && cut[2] == -1,
             "encode cut: n %d (needs 4), tokens %d %d, untouched %d", n, cut[0], cut[1], cut[2]);
}

// Both decoders on the same tokens must agree.
static int decode_both(const int *tok, int n, char *a, char *b, size_t cap) {
    uint32_t u[16];
    for (int i = 0; i < n; i++)
        u[i] = (uint32_t)tok[i];
    int ra = bytetok_decode_response(tok, n, GPT_VOCAB, a, cap);
    int rb = bytetok_decode_wire(u, n, GPT_VOCAB, b, cap);
    TU_CHECK(ra == rb && (ra < 0 || strcmp(a, b) == 0), "int and wire decoders agree: %d %d", ra,
             rb);
    return ra;
}

static void test_decode(void) {
    char a[32], b[32];
    int plain[] = {'4', '6', GPT_TOK_EOS, '9'};
    TU_CHECK(decode_both(plain, 4, a, b, sizeof a) == 2 && !strcmp(a, "46"), "stop at EOS: '%s'",
             a);
    int special[] = {'a', GPT_TOK_BOS, 'b', GPT_TOK_PAD};
    int n = decode_both(special, 4, a, b, sizeof a);
    TU_CHECK(n == 8 && !memcmp(a,
                               "a\xEF\xBF\xBD"
                               "b\xEF\xBF\xBD",
                               8),
             "specials become U+FFFD: %d bytes", n);
    int oov[] = {'a', GPT_VOCAB};
    TU_CHECK(decode_both(oov, 2, a, b, sizeof a) == -1, "token >= vocab refused");
    int neg[] = {'a', -3};
    TU_CHECK(bytetok_decode_response(neg, 2, GPT_VOCAB, a, sizeof a) == -1,
             "negative token refused");
    int longer[] = {'a', 'b', 'c', 'd', 'e'};
    n = decode_both(longer, 5, a, b, 4); // room for 3 bytes + NUL
    TU_CHECK(n == 3 && !strcmp(a, "abc"), "cut at cap: %d '%s'", n, a);
    int tail[] = {'a', 'b', GPT_TOK_SEP};
    n = decode_both(tail, 3, a, b, 5); // U+FFFD does not fit after "ab": left out whole
    TU_CHECK(n == 2 && !strcmp(a, "ab"), "no partial U+FFFD: %d '%s'", n, a);
    TU_CHECK(decode_both(plain, 0, a, b, 1) == 0 && a[0] == 0, "empty response");
}

int main(void) {
    test_encode();
    test_decode();
    return tu_finish("test_bytetok");
}
