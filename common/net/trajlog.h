// trajlog.h: a file of scored trajectories, for offline analysis and for training the
// learner from logged data (rlx-learner --replay). The hub appends to it as trajectories are
// scored.
//
// Format: magic "RLXTRJ1\n" (8 bytes), then records: u32 little-endian length | that many
// bytes of one Envelope holding a TrajectoryBatch (encoded by the wire module). A reader
// stops at the first truncated or unreadable record and says so; earlier records are intact.
#ifndef RLX_TRAJLOG_H
#define RLX_TRAJLOG_H

#include <stdio.h>

#include "wire.h"

typedef struct trajlog trajlog_t;

// Opens path for appending (writing the magic if the file is new). NULL with err.
trajlog_t *trajlog_open_append(const char *path, char *err, size_t errlen);
// Opens path for reading; NULL with err if missing or not a trajectory log.
trajlog_t *trajlog_open_read(const char *path, char *err, size_t errlen);
// Appends one TrajectoryBatch envelope (flushed). 0 or -1.
int trajlog_write(trajlog_t *t, wire_t *w, const Rlx__Envelope *batch);
// Reads the next record: 1 with *out (wire_free it), 0 at a clean end, -1 on a truncated or
// corrupt record (err says which).
int trajlog_read(trajlog_t *t, wire_t *w, Rlx__Envelope **out, char *err, size_t errlen);
void trajlog_close(trajlog_t **self_p);

#endif
