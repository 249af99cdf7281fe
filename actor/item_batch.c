// item_batch.c: see item_batch.h.
#include "item_batch.h"

#include <stdlib.h>
#include <string.h>

int item_batch_init(item_batch_t *b, const Rlx__WorkItem *it, int k, uint32_t actor_id,
                    uint64_t first_seq, uint64_t version) {
    memset(b, 0, sizeof *b);
    int n = (int)it->n_prompts * k;
    b->ids = calloc((size_t)n, sizeof *b->ids);
    b->tr = calloc((size_t)n, sizeof *b->tr);
    b->trp = calloc((size_t)n, sizeof *b->trp);
    if (!b->ids || !b->tr || !b->trp) {
        item_batch_free(b);
        return -1;
    }
    b->n = n;
    for (int i = 0; i < n; i++) {
        rlx__trajectory_id__init(&b->ids[i]);
        b->ids[i].actor_id = actor_id;
        b->ids[i].seq = first_seq + (uint64_t)i;
        rlx__trajectory__init(&b->tr[i]);
        b->tr[i].id = &b->ids[i];
        b->tr[i].work_id = it->work_id;
        b->tr[i].prompt_id = it->prompts[i / k]->prompt_id;
        b->tr[i].group_index = (uint32_t)(i % k);
        b->tr[i].group_size = (uint32_t)k;
        b->tr[i].policy_version = version;
        b->trp[i] = &b->tr[i];
    }
    rlx__trajectory_batch__init(&b->tb);
    b->tb.n_trajectories = (size_t)n;
    b->tb.trajectories = b->trp;
    b->tb.work_id = it->work_id;
    rlx__envelope__init(&b->env);
    b->env.body_case = RLX__ENVELOPE__BODY_TRAJECTORY_BATCH;
    b->env.trajectory_batch = &b->tb;
    return 0;
}

void item_batch_free(item_batch_t *b) {
    free(b->ids);
    free(b->tr);
    free(b->trp);
    memset(b, 0, sizeof *b);
}
