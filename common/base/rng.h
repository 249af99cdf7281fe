// rng.h: xoshiro256** pseudo-random numbers, seeded through splitmix64. Every random choice in
// rlx (initialisation, data order, sampling) draws from an rng_t so runs are reproducible from
// a seed, and the state can be saved in a checkpoint.
#ifndef RLX_RNG_H
#define RLX_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4]; // xoshiro256** state
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
// Seed from two numbers (e.g. run seed and sequence index) so streams are independent.
void rng_seed2(rng_t *r, uint64_t seed, uint64_t stream);
uint64_t rng_next(rng_t *r);
float rng_uniform(rng_t *r);         // [0, 1)
float rng_normal(rng_t *r);          // standard normal (Box-Muller)
uint32_t rng_below(rng_t *r, uint32_t n); // uniform integer in [0, n)

#endif
