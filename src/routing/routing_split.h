/* A routing sink that divides every forward pass among groups of requests (the domains of a
 * dataset, for `moetrace profile --domain-field`): each token goes to the sink of its request's
 * group, with the event's fields cut down to that group's tokens, in batch order. A group's sink
 * sees a pass (its layers, then on_pass with the group's token and sequence counts) only when the
 * pass holds tokens of the group, so a recorder behind it counts exactly the group's forwarded
 * tokens, and the groups' counts (with the tokens of no group) add up to the whole pass's.
 *
 * Tokens are matched by the events' request_ids (ids 0 .. num_requests-1, an index into group_of);
 * a token whose id is outside that range, or whose group is -1, goes to no group. Events without
 * request_ids go nowhere. If scratch memory cannot be grown, the pass's events are dropped and
 * mt_routing_split_failed says so. One thread calls the sink (the engine's). */
#ifndef MT_ROUTING_SPLIT_H
#define MT_ROUTING_SPLIT_H

#include <stdbool.h>
#include <stdint.h>

#include "routing/capture.h"

typedef struct mt_routing_split mt_routing_split;

/* groups: sinks [num_groups] (copied); group_of: [num_requests] group of each request id or -1
 * (copied). NULL when out of memory or when an argument is out of range. */
mt_routing_split *mt_routing_split_new(const mt_routing_sink *groups, int num_groups, const int *group_of,
                                       int num_requests);
void mt_routing_split_free(mt_routing_split *s);
mt_routing_sink mt_routing_split_sink(mt_routing_split *s);
/* Whether any pass was dropped for want of memory. */
bool mt_routing_split_failed(const mt_routing_split *s);

#endif
