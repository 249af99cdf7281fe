// kind.h: the one notion of "trajectory kind" (text, GFlowNet, diffusion) every role decides
// from. It is the wire's TrajectoryKind (proto/rlx.proto) under a short name; a process picks
// its kind once (from the config, a checkpoint's header or a WorkItem) and then dispatches
// through the ops table of that kind (hub_kind.h, actor_kind.h, objective.h).
#ifndef RLX_KIND_H
#define RLX_KIND_H

#include "rlx.pb-c.h"

typedef enum {
    KIND_NONE = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_UNSPECIFIED,
    KIND_TEXT = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_TEXT,
    KIND_DIFFUSION = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_DIFFUSION,
    KIND_GFLOW = RLX__TRAJECTORY_KIND__TRAJECTORY_KIND_GFLOW,
} kind_t;

enum { KIND_COUNT = 4 }; // table size for arrays indexed by kind_t

// "text", "diffusion", "gflow" ("none" for KIND_NONE, "?" for anything else).
const char *kind_name(kind_t k);
// The kind named s (as kind_name writes it), or KIND_NONE.
kind_t kind_parse(const char *s);
// 1 when k is one of the three kinds.
int kind_valid(int k);

#endif
