//! The per-frame record and the protocol of its two atomic words.
//!
//! One [`FrameInfo`] per machine frame, 24 bytes (at most 32 is the design
//! budget). It holds two 64-bit words that every operation updates with a
//! compare-and-swap loop, and a 32-bit resume point for partial validation.
//!
//! # The count word: owner, allocation reference, general count
//!
//! | Bits | Field | Values |
//! |---|---|---|
//! | 63..48 | domain id | the owning [`DomId`] when the state is "domain", else 0 |
//! | 47..46 | state | 0 free, 1 owned by a domain, 2 owned by the host, 3 claimed (being assigned) |
//! | 45 | allocated | the owner holds its allocation reference (Xen `PGC_allocated`) |
//! | 44..0 | general count | every reference, including the allocation reference |
//!
//! Xen keeps the owner in a separate field and checks it after bumping the
//! count (undoing the bump on a mismatch: `get_page` in `xen/arch/x86/mm.c`); here the owner sits
//! in the same word, so "take a reference only if the owner is `d`" is one CAS
//! and an owner change can never slip between the check and the increment.
//!
//! The count word takes these values:
//!
//! - `0`: the frame is free. Only [`assign`](crate::FrameTable::assign) leaves
//!   this state.
//! - state 3 (claimed), count 0: an assigner owns the frame exclusively while
//!   it resets the type word. Every other operation sees "not owned" and fails
//!   at once (nobody waits on a claim).
//! - owned, count `1..=COUNT_MAX`: in use. An owned frame always has a count of
//!   at least 1: the CAS that would bring the count to 0 frees the frame
//!   (writes `0`) instead. `COUNT_MAX - 1` is the most ordinary gets can reach;
//!   the last value is kept for the one extra reference a partial validation
//!   holds, which must never fail (Xen keeps the all-ones count for its
//!   "light" get for the same reason: `get_page_light` in
//!   `xen/arch/x86/mm.c`).
//!
//! Orderings on the count word:
//!
//! - A get succeeds with `Acquire`: it pairs with the `Release` that published
//!   the owner at assignment (and the reset type word with it).
//! - A put that leaves the frame in use succeeds with `Release`, so the
//!   dropper's accesses to the frame happen before whatever follows the last
//!   put. The put that frees the frame uses `AcqRel`: it acquires every
//!   earlier put's release before the frame is handed back (the `Arc` rule).
//! - Assignment claims a free frame with `Acquire` (so the previous owner's
//!   last accesses happen before the new owner's) and publishes the owned word
//!   with `Release`.
//! - Puts load the word, and re-read it on CAS failure, with `Acquire`: when
//!   the value seen makes this put the last, every earlier put must happen
//!   before the type count is read to refuse a free with type references
//!   left (loom found the `Relaxed` version of this wanting).
//! - Elsewhere CAS failures and the first load of each loop are `Relaxed`:
//!   the CAS itself re-checks the value, and nothing else is read on its
//!   strength.
//!
//! # The type word: type, flags, type count
//!
//! | Bits | Field | Values |
//! |---|---|---|
//! | 63..60 | type | a [`FrameType`] code (none 0, L1..L4 1..4, stage-2 5, segment descriptor 6, grant-shared 7, writable 8) |
//! | 59 | pinned | the owner pinned the frame to its type (Xen `PGT_pinned`) |
//! | 58 | validated | contents checked for the current type (`PGT_validated`) |
//! | 57 | partial | a validation was preempted part-way (`PGT_partial`) |
//! | 56..55 | reserved | always 0 |
//! | 54..0 | type count | 55 bits, as Xen's `PGT_count_mask` |
//!
//! The type word is only touched by holders of a general reference (every type
//! reference is backed by a general reference of the same user, as with Xen's
//! `get_page_and_type`), and by an assigner holding the claim. Its states:
//!
//! - count 0: unused. The type may change on the next get; writable,
//!   grant-shared, none and segment-descriptor types keep `validated` so the
//!   next get of the same type is cheap (Xen's `_put_page_type`). A page table never
//!   has `validated` at count 0.
//! - count `n >= 1`, validated: `n` type references (a pin is one of them).
//! - count 1, neither validated nor partial: the validate lock. One CPU is
//!   validating (after a 0 -> 1 get) or de-validating (after the last put of a
//!   page table). Other gets of the same type fail with
//!   [`ValidationInProgress`](crate::FrameError::ValidationInProgress) instead
//!   of spinning; gets of another type see a non-zero count and conflict. The
//!   type can therefore never change while a stale count is observed (the
//!   XSA-401 class of bug).
//! - count 1, partial: a validation was preempted. The count and one extra
//!   general reference belong to the partial state; the next get of the same
//!   type clears `partial` without bumping the count and resumes at the entry
//!   stored in the resume point (Xen's `PGT_partial` in `_get_page_type`).
//!
//! Orderings on the type word:
//!
//! - A get succeeds with `AcqRel`: the `Acquire` half makes the validator's
//!   work (the references it took, the entries it checked) visible to the
//!   new holder; the `Release` half orders a type change after it.
//! - A put succeeds with `Release`, so the holder's use of the type happens
//!   before a later type change. The last put of a page table takes the
//!   validate lock with `AcqRel` instead: every other holder's use happens
//!   before the de-validation.
//! - The end of a validation or de-validation is a `Release`
//!   read-modify-write (setting `validated` or `partial`, or dropping the
//!   lock's count), paired with the `Acquire` of the next get or of whoever
//!   takes over a partial state.
//! - The resume point is `Relaxed`: only the holder of the validate lock
//!   touches it, and the lock's `Release`/`Acquire` pair orders those
//!   accesses.
//!
//! [`DomId`]: hvmem_types::DomId

use core::fmt;

use hvmem_types::DomId;

use crate::sync::{AtomicU32, AtomicU64};
use crate::{FrameType, Owner};

/// One frame's record: owner, reference counts and type, all atomic.
///
/// The embedder provides a slice of these (one per frame of the ranges the
/// table covers), made with [`FrameInfo::new`] or [`Default`]. A fresh record
/// describes a free frame. Its bytes are all zero, so zero-filled memory
/// (a `.bss` array, pages a boot allocator cleared) is already a valid set
/// of free records.
pub struct FrameInfo {
    pub(crate) count: AtomicU64,
    pub(crate) type_info: AtomicU64,
    /// The first entry a resumed validation starts from (Xen
    /// `nr_validated_ptes`). Only the validate-lock holder touches it.
    pub(crate) resume_at: AtomicU32,
}

#[cfg(not(loom))]
static_assertions::const_assert!(core::mem::size_of::<FrameInfo>() <= 32);

impl FrameInfo {
    /// A record for a free frame.
    #[cfg(not(loom))]
    #[inline]
    #[must_use]
    pub const fn new() -> Self {
        Self {
            count: AtomicU64::new(CountWord::FREE.0),
            type_info: AtomicU64::new(0),
            resume_at: AtomicU32::new(0),
        }
    }

    /// A record for a free frame.
    #[cfg(loom)]
    #[must_use]
    pub fn new() -> Self {
        Self {
            count: AtomicU64::new(CountWord::FREE.0),
            type_info: AtomicU64::new(0),
            resume_at: AtomicU32::new(0),
        }
    }
}

impl Default for FrameInfo {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FrameInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = CountWord(self.count.load(crate::sync::Ordering::Relaxed));
        let ty = TypeWord(self.type_info.load(crate::sync::Ordering::Relaxed));
        f.debug_struct("FrameInfo")
            .field("count", &count)
            .field("type", &ty)
            .finish()
    }
}

/// The value of a count word (see the module docs for the layout).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CountWord(pub(crate) u64);

impl CountWord {
    /// The largest general count, reached only by the partial-validation
    /// reference.
    pub(crate) const COUNT_MAX: u64 = (1 << 45) - 1;
    const ALLOCATED: u64 = 1 << 45;
    const STATE_SHIFT: u32 = 46;
    const STATE_MASK: u64 = 0b11 << Self::STATE_SHIFT;
    const STATE_DOMAIN: u64 = 1;
    const STATE_HOST: u64 = 2;
    const STATE_CLAIMED: u64 = 3;
    const DOMID_SHIFT: u32 = 48;

    /// A free frame.
    pub(crate) const FREE: Self = Self(0);
    /// A frame an assigner has claimed but not yet published.
    pub(crate) const CLAIMED: Self = Self(Self::STATE_CLAIMED << Self::STATE_SHIFT);

    /// An owned frame holding only its allocation reference.
    pub(crate) const fn allocated_to(owner: Owner) -> Self {
        let base = match owner {
            Owner::Domain(dom) => {
                ((dom.get() as u64) << Self::DOMID_SHIFT)
                    | (Self::STATE_DOMAIN << Self::STATE_SHIFT)
            }
            Owner::Host => Self::STATE_HOST << Self::STATE_SHIFT,
        };
        Self(base | Self::ALLOCATED | 1)
    }

    pub(crate) const fn owner(self) -> Option<Owner> {
        match (self.0 & Self::STATE_MASK) >> Self::STATE_SHIFT {
            Self::STATE_DOMAIN => Some(Owner::Domain(DomId::new(
                (self.0 >> Self::DOMID_SHIFT) as u16,
            ))),
            Self::STATE_HOST => Some(Owner::Host),
            _ => None,
        }
    }

    pub(crate) const fn count(self) -> u64 {
        self.0 & Self::COUNT_MAX
    }

    /// The owner field (domain id and state bits) of every word `owner`
    /// owns. Only [`Self::allocated_to`] writes owner fields, so a word
    /// belongs to `owner` exactly when its owner field equals this (the
    /// host's field has a zero domain id).
    pub(crate) const fn owner_field(owner: Owner) -> u64 {
        Self::allocated_to(owner).0 & !(Self::ALLOCATED | Self::COUNT_MAX)
    }

    /// Whether a get in the name of the owner whose
    /// [`owner_field`](Self::owner_field) is `owner_field` may add a
    /// reference: that owner holds the frame and the count is below
    /// `COUNT_MAX - 1` (the last value is the partial-validation
    /// reference's). One comparison: with the allocation flag masked out,
    /// the word XOR the owner field is the bare count when the owner
    /// matches, and at least `1 << 46` when it does not.
    pub(crate) const fn admits_get(self, owner_field: u64) -> bool {
        (self.0 ^ owner_field) & !Self::ALLOCATED < Self::COUNT_MAX - 1
    }

    /// Whether the frame is owned (by a domain or the host): state 1 or 2.
    /// Adding one to the state sets its high bit exactly for those two.
    pub(crate) const fn is_owned(self) -> bool {
        self.0.wrapping_add(1 << Self::STATE_SHIFT) & (2 << Self::STATE_SHIFT) != 0
    }

    /// Whether a put may simply drop one reference: the frame is owned and
    /// holds at least two, so one besides the allocation reference is a
    /// user's and the frame stays in use afterwards.
    pub(crate) const fn drops_without_freeing(self) -> bool {
        self.count() >= 2 && self.is_owned()
    }

    pub(crate) const fn allocated(self) -> bool {
        self.0 & Self::ALLOCATED != 0
    }

    /// References other than the allocation reference: the ones `put_page`
    /// may drop.
    pub(crate) const fn user_refs(self) -> u64 {
        self.count() - (self.0 & Self::ALLOCATED != 0) as u64
    }

    /// The same word with the count one higher. The caller checked the count
    /// is below [`Self::COUNT_MAX`], so no carry reaches the flag bits.
    pub(crate) const fn incremented(self) -> Self {
        Self(self.0 + 1)
    }

    /// The same word with the count one lower. The caller checked the count
    /// is at least 2, so the frame stays owned.
    pub(crate) const fn decremented(self) -> Self {
        Self(self.0 - 1)
    }

    /// The word without the allocation reference (flag and count), for a
    /// count of at least 2.
    pub(crate) const fn without_allocation(self) -> Self {
        Self((self.0 & !Self::ALLOCATED) - 1)
    }
}

impl fmt::Debug for CountWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountWord")
            .field("owner", &self.owner())
            .field("allocated", &self.allocated())
            .field("count", &self.count())
            .finish()
    }
}

/// The value of a type word (see the module docs for the layout).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypeWord(pub(crate) u64);

impl TypeWord {
    /// The largest type count (55 bits, as Xen's `PGT_count_mask`).
    pub(crate) const COUNT_MAX: u64 = (1 << 55) - 1;
    const TYPE_SHIFT: u32 = 60;
    const TYPE_MASK: u64 = 0xf << Self::TYPE_SHIFT;
    pub(crate) const PINNED: u64 = 1 << 59;
    pub(crate) const VALIDATED: u64 = 1 << 58;
    pub(crate) const PARTIAL: u64 = 1 << 57;

    /// An unused frame of type `ty`, not validated.
    pub(crate) const fn of_type(ty: FrameType) -> Self {
        Self(ty.code() << Self::TYPE_SHIFT)
    }

    pub(crate) const fn frame_type(self) -> FrameType {
        match FrameType::from_code(self.0 >> Self::TYPE_SHIFT) {
            Some(ty) => ty,
            // Codes 9..=15 are never written; read them as "none".
            None => FrameType::None,
        }
    }

    pub(crate) const fn count(self) -> u64 {
        self.0 & Self::COUNT_MAX
    }

    pub(crate) const fn pinned(self) -> bool {
        self.0 & Self::PINNED != 0
    }

    pub(crate) const fn validated(self) -> bool {
        self.0 & Self::VALIDATED != 0
    }

    pub(crate) const fn partial(self) -> bool {
        self.0 & Self::PARTIAL != 0
    }

    /// Whether a get of type `ty` is a plain increment: the frame has type
    /// `ty`, is validated, and the count is below its limit. (At count 0
    /// that keeps the type and its validation, as a get at count 0 of the
    /// same, still-validated type does.) One comparison: the word XOR the
    /// validated word of type `ty`, with the pin, partial and reserved bits
    /// masked out, is the bare count exactly when type and flag match.
    pub(crate) const fn admits_plain_get(self, ty: FrameType) -> bool {
        const KEY: u64 = TypeWord::TYPE_MASK | TypeWord::VALIDATED | TypeWord::COUNT_MAX;
        (self.0 ^ (Self::of_type(ty).0 | Self::VALIDATED)) & KEY < Self::COUNT_MAX
    }

    /// Whether a put of an ordinary type reference is a plain decrement: the
    /// frame is validated, holds a reference besides the pin's, and this is
    /// not the last reference of a page table (which de-validates).
    pub(crate) const fn drops_plain_ref(self) -> bool {
        let count = self.count();
        self.validated()
            && count > self.pinned() as u64
            && (count >= 2 || !self.frame_type().is_page_table())
    }

    pub(crate) const fn with_count(self, count: u64) -> Self {
        Self((self.0 & !Self::COUNT_MAX) | (count & Self::COUNT_MAX))
    }

    pub(crate) const fn with(self, flag: u64) -> Self {
        Self(self.0 | flag)
    }

    pub(crate) const fn without(self, flag: u64) -> Self {
        Self(self.0 & !flag)
    }
}

impl fmt::Debug for TypeWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeWord")
            .field("type", &self.frame_type())
            .field("count", &self.count())
            .field("pinned", &self.pinned())
            .field("validated", &self.validated())
            .field("partial", &self.partial())
            .finish()
    }
}

/// A snapshot of one frame, as [`FrameTable::state`](crate::FrameTable::state)
/// reads it.
///
/// The two words are read one after the other, so under concurrent updates
/// the snapshot may mix two moments; it is exact when nothing else runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct FrameState {
    /// The owner, or `None` for a free frame.
    pub owner: Option<Owner>,
    /// Whether the owner still holds its allocation reference.
    pub allocated: bool,
    /// The general reference count, the allocation reference included.
    pub refs: u64,
    /// The current (or, at type count 0, the last) type.
    pub frame_type: FrameType,
    /// The type reference count, a pin included.
    pub type_refs: u64,
    /// Whether the frame is pinned to its type.
    pub pinned: bool,
    /// Whether the contents are validated for the type.
    pub validated: bool,
    /// Whether a validation was preempted part-way.
    pub partial: bool,
}

impl FrameState {
    pub(crate) const fn from_words(count: CountWord, ty: TypeWord) -> Self {
        Self {
            owner: count.owner(),
            allocated: count.allocated(),
            refs: count.count(),
            frame_type: ty.frame_type(),
            type_refs: ty.count(),
            pinned: ty.pinned(),
            validated: ty.validated(),
            partial: ty.partial(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frame_info_fits_the_32_byte_budget() {
        assert!(core::mem::size_of::<FrameInfo>() <= 32);
    }

    #[test]
    fn count_word_keeps_owner_flag_and_count_apart() {
        let word = CountWord::allocated_to(Owner::Domain(DomId::new(0x7fef)));
        assert_eq!(word.owner(), Some(Owner::Domain(DomId::new(0x7fef))));
        assert!(word.allocated());
        assert_eq!(word.count(), 1);
        assert_eq!(word.user_refs(), 0);
        let word = word.incremented().incremented();
        assert_eq!(word.count(), 3);
        let word = word.without_allocation();
        assert!(!word.allocated());
        assert_eq!(word.count(), 2);
        assert_eq!(word.owner(), Some(Owner::Domain(DomId::new(0x7fef))));
        assert_eq!(
            CountWord::allocated_to(Owner::Host).owner(),
            Some(Owner::Host)
        );
        assert_eq!(CountWord::FREE.owner(), None);
        assert_eq!(CountWord::CLAIMED.owner(), None);
    }

    /// The fast-path tests of the get and put loops are single masks and
    /// comparisons; they must agree with the decoded owner and count on every
    /// state, owner and count edge.
    #[test]
    fn fast_path_tests_agree_with_the_decoded_word() {
        let owners = [
            Owner::Host,
            Owner::Domain(DomId::new(0)),
            Owner::Domain(DomId::new(1)),
            Owner::Domain(DomId::new(0x7fef)),
            Owner::Domain(DomId::new(0xffff)),
        ];
        let counts = [
            0,
            1,
            2,
            3,
            CountWord::COUNT_MAX - 2,
            CountWord::COUNT_MAX - 1,
            CountWord::COUNT_MAX,
        ];
        let owned = owners.into_iter().flat_map(|owner| {
            let base = CountWord::allocated_to(owner).0 & !CountWord::COUNT_MAX;
            [base, base & !CountWord::ALLOCATED]
        });
        let words = [CountWord::FREE.0, CountWord::CLAIMED.0]
            .into_iter()
            .chain(owned);
        let mut checked = 0;
        for word in words {
            for count in counts {
                let word = CountWord((word & !CountWord::COUNT_MAX) | count);
                assert_eq!(word.is_owned(), word.owner().is_some(), "{word:?}");
                assert_eq!(
                    word.drops_without_freeing(),
                    word.owner().is_some() && word.count() >= 2,
                    "{word:?}"
                );
                for owner in owners {
                    let expected =
                        word.owner() == Some(owner) && word.count() + 1 < CountWord::COUNT_MAX;
                    assert_eq!(
                        word.admits_get(CountWord::owner_field(owner)),
                        expected,
                        "{word:?} for {owner:?}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 12 * counts.len() * owners.len());
    }

    /// The type loops' fast-path tests must take only words on which the
    /// full loop would do the same plain increment or decrement, for every
    /// stored type code (and the never-stored ones), flag and count edge.
    #[test]
    fn type_fast_path_tests_agree_with_the_decoded_word() {
        // Fewer edges under miri: the whole grid is some 7000 checks.
        let counts: &[u64] = if cfg!(miri) {
            &[0, 1, 2, TypeWord::COUNT_MAX]
        } else {
            &[0, 1, 2, 3, TypeWord::COUNT_MAX - 1, TypeWord::COUNT_MAX]
        };
        let codes = if cfg!(miri) { 4..10 } else { 0..16u64 };
        let mut checked = 0;
        for code in codes.clone() {
            for flags in 0..8u64 {
                for &count in counts {
                    let word = TypeWord((code << TypeWord::TYPE_SHIFT) | (flags << 57) | count);
                    let page_table = word.frame_type().is_page_table();
                    assert_eq!(
                        word.drops_plain_ref(),
                        word.validated()
                            && count > u64::from(word.pinned())
                            && !(count == 1 && page_table),
                        "{word:?}"
                    );
                    for ty in FrameType::ALL {
                        assert_eq!(
                            word.admits_plain_get(ty),
                            code == ty.code() && word.validated() && count < TypeWord::COUNT_MAX,
                            "{word:?} for {ty:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(
            checked,
            codes.count() * 8 * counts.len() * FrameType::ALL.len()
        );
    }

    #[test]
    fn type_word_keeps_type_flags_and_count_apart() {
        let word = TypeWord::of_type(FrameType::Writable)
            .with(TypeWord::VALIDATED)
            .with_count(TypeWord::COUNT_MAX);
        assert_eq!(word.frame_type(), FrameType::Writable);
        assert!(word.validated());
        assert!(!word.pinned());
        assert!(!word.partial());
        assert_eq!(word.count(), TypeWord::COUNT_MAX);
        assert_eq!(TypeWord(0).frame_type(), FrameType::None);
    }
}
