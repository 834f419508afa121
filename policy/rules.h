// rules: the index that finds the first rule (in file order) matching a destination
// without scanning the table. Exact names in a hash table, "*.suffix" names in another,
// looked up once per label of the destination; CIDRs in one hash table per prefix length
// in use; "*" in a list. Each candidate carries its rule number; the lowest wins.
// Lookup cost depends on the destination (labels, prefix lengths in use), not on the
// number of rules.
#ifndef MTLSGW_RULES_H
#define MTLSGW_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "policy/callers.h"
#include "policy/match.h"

typedef struct pol_index pol_index;

pol_index *pol_index_new(void);
void pol_index_free(pol_index *idx);

// pol_index_add adds |m| as rule number |rule|, for the callers |callers| (NULL: any;
// kept by the caller, it must outlive the index) and the listeners in |listeners| (bit i:
// listener i; 0: any). Rules must be added in increasing order. Returns 1, or 0 on
// allocation failure.
int pol_index_add(pol_index *idx, const pol_match *m, uint32_t rule, const pol_callers *callers, uint64_t listeners);

// pol_index_lookup returns the lowest rule number matching |d| for the local caller
// |caller| (GW_CALLER_NONE: not known) on listener |listener| (-1: none in particular:
// only rules for any listener match), or -1. Caller and listener are checked only on
// candidates the destination found.
long pol_index_lookup(const pol_index *idx, const pol_dest *d, uint32_t caller, int listener);

#endif
