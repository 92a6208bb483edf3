//! The frame table against its reference model.
//!
//! The bytes decode, four per operation, into assign / release / transfer /
//! get and put page / get and put type / pin / unpin / relinquish / validator
//! reconfiguration on a six-frame table with a hole (plus frames outside it).
//! The decoder, the single-threaded model and the invariant checks live in
//! `hvmem_frametable::model` (feature `model`), shared with the crate's
//! property test; this target only feeds them. It panics when the table and
//! the model disagree, or when conservation, the count, type and flag values,
//! the validator's entry references, the one-validation-per-first-reference
//! rule or the one-free-per-frame rule break.

/// Runs the operations `data` decodes to against the model.
pub fn run(data: &[u8]) {
    hvmem_frametable::model::run(data);
}
