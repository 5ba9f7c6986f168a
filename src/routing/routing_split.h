/* A routing sink that divides every forward pass among groups of requests (the domains of a
 * dataset or of served traffic): each token goes to the sink of its request's group, with the
 * event's fields cut down to that group's tokens, in batch order. A group's sink sees a pass (its
 * layers, then on_pass with the group's token and sequence counts) only when the pass holds tokens
 * of the group, so a recorder behind it counts exactly the group's forwarded tokens, and the
 * groups' counts (with the tokens of no group) add up to the whole pass's.
 *
 * Tokens are matched by the events' request_groups (mt_request.group): group g >= 1 is the g-th
 * sink added; tokens of group 0, of a group not added yet, or of events without request_groups
 * belong to no group and go to the rest's sink when one is set, else nowhere.
 * Groups can be added while the engine runs, from any thread: a pass sees the groups added before
 * its first layer. If scratch memory cannot be grown, the pass's events are dropped and
 * mt_routing_split_failed says so. One thread calls the sink (the engine's). */
#ifndef MT_ROUTING_SPLIT_H
#define MT_ROUTING_SPLIT_H

#include <stdbool.h>
#include <stdint.h>

#include "routing/capture.h"

typedef struct mt_routing_split mt_routing_split;

/* Room for max_groups groups (>= 1); NULL when out of memory or max_groups < 1. */
mt_routing_split *mt_routing_split_new(int max_groups);
void mt_routing_split_free(mt_routing_split *s);
/* Adds a group with the sink (copied) and returns its number (1, 2, ...); -1 when max_groups are
 * there already or the sink has no on_layer. Thread-safe. */
int mt_routing_split_add(mt_routing_split *s, mt_routing_sink group);
/* The sink of the tokens of no group (before the sink sees any pass). */
void mt_routing_split_set_rest(mt_routing_split *s, mt_routing_sink rest);
mt_routing_sink mt_routing_split_sink(mt_routing_split *s);
/* Whether any pass was dropped for want of memory. */
bool mt_routing_split_failed(const mt_routing_split *s);

#endif
