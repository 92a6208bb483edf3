//! The grant tables against their reference model, with a malicious granter
//! and a malicious mapper.
//!
//! The bytes decode, four per operation, into the granting guests' calls
//! (grant, sub-page, transitive, transfer offers, end access, end transfer),
//! raw writes of chosen values into a granter's shared frames behind the
//! protocol's back, and the mappers' hypercalls with arbitrary refs,
//! handles, flags, frames, offsets and lengths (map, unmap, copy, transfer,
//! set_version, setup_table, get_status_frames, query_size, swap_grant_ref,
//! get_version, unmap_and_replace with right and wrong addresses and a PTE
//! move the embedder may refuse, cache_flush of any frame, range and flags
//! on x86 or Arm, release of a dying mapper's mappings), on
//! two domains plus a domain id that does not
//! exist. The decoder, the model and the invariant checks live in
//! `hvmem_grant::model` (feature `model`), shared with the crate's property
//! test; this target only feeds them. It panics on any panic inside the
//! tables, when a mapping exists without a live grant with the right
//! permission, when pins or status bits disagree with the mappings, when
//! end of access succeeds on a mapped entry, or when a frame's reference
//! counts differ from what the mappings hold (including after teardown).

/// Runs the operations `data` decodes to against the model.
pub fn run(data: &[u8]) {
    hvmem_grant::model::run(data);
}
