// Which ready peers average together in one round (JobSpec.group_size, Moshpit-style groups).
//
// Contract: a pure function of public values — the job id, the round and the members' keys — so
// anyone holding the signed RoundStarts can recompute and audit it. The input order of `keys`
// does not matter. With group_size 0, or no more members than group_size, there is one group of
// everyone. Otherwise there are k = ceil(N / group_size) groups whose sizes differ by at most 1.
//
// Re-mixing: rounds come in pairs (epochs). Each epoch orders the members by a keyed hash; its
// even round cuts that order into k contiguous blocks, its odd round deals it out round-robin
// (position mod k). The two partitions are orthogonal, so when each block holds at least k
// members (N ≳ k²) every peer's state reaches every other in two rounds; each new epoch draws a
// fresh order (redrawn if it would repeat the previous round's partition) so larger pools keep
// spreading by about a factor group_size per round. docs/GROUPS.md has the reasoning.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tributary::launcher {

// The group size in force for `round` of a job of `total_rounds`: the job's, except that the
// last round is one group of everyone, so that the job ends with a single model that every
// peer holds bit-identically (the groups' states are averaged exactly in that round).
uint32_t GroupSizeOfRound(uint32_t group_size, uint64_t round, uint32_t total_rounds);

// Groups of indices into `keys` (each group ascending; every index in exactly one group).
// `keys` must be distinct (public keys, any encoding).
std::vector<std::vector<size_t>> FormGroups(std::string_view job_id, uint64_t round, uint32_t group_size,
                                            const std::vector<std::string>& keys);

}  // namespace tributary::launcher
