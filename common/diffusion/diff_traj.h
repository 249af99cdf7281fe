// diff_traj.h: diffusion trajectories between the wire (proto DiffusionTrajectory, see
// proto/rlx.proto) and the sampler's / learner's flat arrays (diffusion.h, diffusion_rl.h).
// The actor fills the proto from diff_sample's output, the hub checks what arrives against
// the work it handed out (diff_traj_check), and the learner checks again against its policy
// (drl_check_traj) before it views a trajectory as a drl_traj_t.
//
// Wire form of a chain of S steps of a sample of shape [s_0, .., s_{n-1}] (dim = product):
// steps S, states (S+1) * dim floats (x at ts[0] = T-1 .. ts[S] = 0), logpf S floats, logpb
// S floats, timesteps S+1 strictly decreasing to 0, class_label (-1 = unconditional).
#ifndef RLX_DIFF_TRAJ_H
#define RLX_DIFF_TRAJ_H

#include <stddef.h>
#include <stdint.h>

#include "rlx.pb-c.h"

#define DIFF_TRAJ_MAX_SHAPE 4 // dimensions of a sample's shape

// What the receiver expects of every trajectory.
typedef struct {
    int nshape;                          // entries of shape
    uint32_t shape[DIFF_TRAJ_MAX_SHAPE]; // sample shape
    int steps;                           // S
    const int *ts; // (steps+1) the times every chain must have (the learner's schedule), or
                   // NULL: any strictly decreasing to 0 (the hub knows no schedule)
} diff_traj_spec_t;

// Elements of one sample: the product of the spec's shape.
size_t diff_traj_dim(const diff_traj_spec_t *sp);
// Why x cannot be a chain of spec sp conditioned on label (shape, steps, counts, timesteps
// strictly decreasing to 0 and sp->ts when given, finite states, log-densities of magnitude
// at most WIRE_DIFF_LOGP_MAX_PER_DIM * dim (wire.h), the class
// label), or NULL.
const char *diff_traj_check(const diff_traj_spec_t *sp, const Rlx__DiffusionTrajectory *x,
                            int label);
// Fills x as a view of one chain: states ((S+1) * dim floats), logpf, logpb (S each) and
// timesteps (S+1) are the caller's storage, shape (nshape) too.
void diff_traj_fill(Rlx__DiffusionTrajectory *x, const uint32_t *shape, int nshape, int S,
                    float *states, float *logpf, float *logpb, uint32_t *timesteps, int label);

#endif
