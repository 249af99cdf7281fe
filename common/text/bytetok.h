// bytetok.h: the byte-level tokenizer shared by actors, hub, learner and tools. Text is UTF-8
// bytes, one token per byte (0..255); a prompt starts with BOS; a response ends at EOS.
#ifndef RLX_BYTETOK_H
#define RLX_BYTETOK_H

#include <stddef.h>
#include <stdint.h>

// BOS followed by the bytes of text[0..len); writes at most cap tokens. Returns the number of
// tokens the full encoding needs (may exceed cap: then the output is cut).
int bytetok_encode_prompt(const char *text, size_t len, int *out, int cap);

// Response tokens up to (not including) the first EOS as text, NUL-terminated in out
// (cap >= 1), always valid UTF-8 (proto3 strings must be: ScoreItem.response_text). Special
// tokens other than EOS (BOS, PAD, SEP, anything >= 256) are not bytes: each becomes U+FFFD
// so a scorer sees that the response was not plain text; so does each ill-formed UTF-8 byte
// sequence (one U+FFFD per maximal subpart). 3 * n + 1 bytes always suffice. Returns the
// text length, or -1 if a token is out of the vocabulary (negative or >= vocab).
int bytetok_decode_response(const int *tokens, int n, int vocab, char *out, size_t cap);
// The same for tokens as they come off the wire (TextTrajectory.response_tokens).
int bytetok_decode_wire(const uint32_t *tokens, int n, int vocab, char *out, size_t cap);

#endif
