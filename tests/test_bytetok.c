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

// Raw sampled bytes that are not UTF-8 become U+FFFD (one per maximal subpart), so the text
// is always a valid proto3 string; well-formed multi-byte characters pass unchanged.
static void test_utf8(void) {
    char a[64], b[64];
#define R "\xEF\xBF\xBD"
    struct {
        int tok[8];
        int n;
        const char *want;
    } cases[] = {
        {{0xC3, 0x28, 0xFF}, 3, R "(" R},                  // lead without continuation, FF
        {{0xC3, 0xA9, 'x'}, 3, "\xC3\xA9x"},               // e-acute: valid
        {{0xE2, 0x82, 0xAC}, 3, "\xE2\x82\xAC"},           // euro sign: valid
        {{0xF0, 0x9F, 0x98, 0x80}, 4, "\xF0\x9F\x98\x80"}, // emoji: valid
        {{0xE2, 0x82, 'a'}, 3, R "a"},                     // truncated 3-byte: one U+FFFD
        {{0xE2, 0x82}, 2, R},                              // cut at the end of the response
        {{0xE2, 0x82, GPT_TOK_EOS}, 3, R},                 // cut by EOS
        {{0xC0, 0xAF}, 2, R R},                            // overlong '/'
        {{0xED, 0xA0, 0x80}, 3, R R R},                    // a surrogate
        {{0xF4, 0x90, 0x80, 0x80}, 4, R R R R},            // above U+10FFFF
        {{0x80, 'a'}, 2, R "a"},                           // stray continuation byte
        {{0xC3, GPT_TOK_BOS, 0xA9}, 3, R R R},             // a special token inside a character
    };
#undef R
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = decode_both(cases[i].tok, cases[i].n, a, b, sizeof a);
        TU_CHECK(n == (int)strlen(cases[i].want) && !strcmp(a, cases[i].want),
                 "utf8 case %zu: %d bytes, want %zu", i, n, strlen(cases[i].want));
    }
    // Worst case fits the documented 3 * n + 1.
    int ff[8] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    TU_CHECK(decode_both(ff, 8, a, b, 3 * 8 + 1) == 24, "8 x FF in 3 * 8 + 1 bytes");
    int oov[] = {0xC3, GPT_VOCAB};
    TU_CHECK(decode_both(oov, 2, a, b, sizeof a) == -1, "token >= vocab after a lead byte");
}

int main(void) {
    test_encode();
    test_decode();
    test_utf8();
    return tu_finish("test_bytetok");
}
