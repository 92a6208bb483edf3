//! `mmu_update`: a batch of entry writes a PV guest asks for (Xen
//! `HYPERVISOR_mmu_update` with `MMU_NORMAL_PT_UPDATE` and
//! `MMU_PT_UPDATE_PRESERVE_AD`).

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_types::Mfn;

use super::entry::{
    ACCESSED, DIRTY, EntryError, FAST_PATH_FLAGS, PRESENT, PvConfig, drop_entry, take_entry,
};
use super::oracle::{FrameOracle, PvLevel, PvType};
use super::table::{guest_slot, table_entries};
use crate::PhysMem;

/// `ptr & 7`: write the entry (Xen `MMU_NORMAL_PT_UPDATE`).
pub const MMU_NORMAL_PT_UPDATE: u8 = 0;
/// `ptr & 7`: update the machine-to-physical table (Xen
/// `MMU_MACHPHYS_UPDATE`); not a page-table write, refused here.
pub const MMU_MACHPHYS_UPDATE: u8 = 1;
/// `ptr & 7`: write the entry but keep the accessed and dirty bits the
/// current entry has (Xen `MMU_PT_UPDATE_PRESERVE_AD`).
pub const MMU_PT_UPDATE_PRESERVE_AD: u8 = 2;

/// How many times a write retries when only the accessed/dirty bits of the
/// entry changed under it (the hardware walker sets them concurrently).
const AD_RETRIES: u32 = 8;

/// One request of an `mmu_update` batch, as the guest wrote it (Xen
/// `struct mmu_update`, 16 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C)]
pub struct MmuUpdate {
    /// The machine address of the entry, with the command in bits 2..0.
    pub ptr: u64,
    /// The new entry.
    pub val: u64,
}

// The guest's ABI: two 64-bit words, no padding.
const _: () = assert!(core::mem::size_of::<MmuUpdate>() == 16);

impl MmuUpdate {
    /// The command: bits 2..0 of `ptr`.
    #[must_use]
    pub const fn command(&self) -> u8 {
        (self.ptr & 7) as u8
    }

    /// The frame holding the entry.
    #[must_use]
    pub const fn table(&self) -> Mfn {
        Mfn::new(self.ptr >> 12)
    }

    /// The entry's index in its table.
    #[must_use]
    pub const fn index(&self) -> u32 {
        ((self.ptr & 0xfff) >> 3) as u32
    }
}

/// Why one request of a batch was refused. The entry it names is unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum UpdateError {
    /// A command other than [`MMU_NORMAL_PT_UPDATE`] and
    /// [`MMU_PT_UPDATE_PRESERVE_AD`].
    UnsupportedCommand {
        /// The command bits.
        command: u8,
    },
    /// The frame holding the entry is not the guest's.
    TableNotOwned {
        /// The frame.
        table: Mfn,
    },
    /// The frame holding the entry is not a validated page table in use
    /// (the guest writes other frames through its own writable mappings).
    NotAPageTable {
        /// The frame.
        table: Mfn,
    },
    /// The table's type changed, or its count is at its limit, between the
    /// check and the reference that keeps it a table during the write.
    TableBusy {
        /// The frame.
        table: Mfn,
    },
    /// The table's memory is not reachable through [`PhysMem`].
    Unreachable {
        /// The frame.
        table: Mfn,
    },
    /// An L4 slot that belongs to the hypervisor (256..=271).
    XenSlot {
        /// The slot.
        index: u32,
    },
    /// The new entry breaks a rule of its level.
    Entry(EntryError),
    /// The entry changed (beyond accessed/dirty) while being written: a
    /// concurrent update. Nothing was changed; the guest may retry (Xen
    /// `-EBUSY`).
    EntryChanged,
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedCommand { command } => write!(f, "unsupported command {command}"),
            Self::TableNotOwned { table } => write!(f, "table {table} is not the guest's"),
            Self::NotAPageTable { table } => write!(f, "{table} is not a page table in use"),
            Self::TableBusy { table } => write!(f, "table {table} is busy"),
            Self::Unreachable { table } => write!(f, "table {table} is not reachable"),
            Self::XenSlot { index } => write!(f, "L4 slot {index} belongs to the hypervisor"),
            Self::Entry(error) => write!(f, "{error}"),
            Self::EntryChanged => f.write_str("entry changed concurrently"),
        }
    }
}

impl core::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Entry(error) => Some(error),
            _ => None,
        }
    }
}

impl From<EntryError> for UpdateError {
    fn from(error: EntryError) -> Self {
        Self::Entry(error)
    }
}

/// A batch stopped at a request: requests `0..done` are applied (and stay
/// applied), request `done` was refused with `error` and changed nothing,
/// requests after it were not looked at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BatchError {
    /// How many requests were applied (the index of the refused one).
    pub done: usize,
    /// Why request `done` was refused.
    pub error: UpdateError,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mmu_update request {}: {}", self.done, self.error)
    }
}

impl core::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Applies a batch of entry writes for the guest `owner`, in order, stopping
/// at the first refused request (Xen's semantics: earlier requests stay
/// applied). See the [module docs](super) for what each level accepts.
///
/// For each request: the table frame (`ptr >> 12`) must be owned by `owner`
/// and be a validated page table of some level N in use; a general and an
/// `LN` type reference are held on it while the entry is written, so it
/// cannot be de-validated underneath. The new entry is checked against
/// level N's rules and the references it implies are taken; the entry is
/// then swapped with a compare-and-exchange; only after that succeeds are the
/// references of the old entry dropped, so a frame never drops to zero
/// references while an entry still names it. A change that keeps the
/// target and touches only [fast-path flags](super#the-fast-path) swaps
/// without touching references.
///
/// TLBs are the caller's, as in Xen: after a batch that removed or
/// restricted entries, flush the guest's TLBs (every CPU it runs on) before
/// the guest relies on the change, and before a frame whose last writable
/// reference went takes a page-table type, since a stale writable
/// translation of it could otherwise outlive the type change.
///
/// Work is bounded by `requests.len()`; an embedder that wants preemption
/// passes a slice at a time.
///
/// # Errors
///
/// A [`BatchError`] naming the first refused request and its
/// [`UpdateError`]; that request changed nothing.
pub fn mmu_update<M, O>(
    mem: &M,
    oracle: &O,
    config: &PvConfig,
    owner: O::Domain,
    requests: &[MmuUpdate],
) -> Result<usize, BatchError>
where
    M: PhysMem + ?Sized,
    O: FrameOracle + ?Sized,
{
    for (done, request) in requests.iter().enumerate() {
        update_one(mem, oracle, config, owner, *request)
            .map_err(|error| BatchError { done, error })?;
    }
    Ok(requests.len())
}

fn update_one<M, O>(
    mem: &M,
    oracle: &O,
    config: &PvConfig,
    owner: O::Domain,
    request: MmuUpdate,
) -> Result<(), UpdateError>
where
    M: PhysMem + ?Sized,
    O: FrameOracle + ?Sized,
{
    let preserve_ad = match request.command() {
        MMU_NORMAL_PT_UPDATE => false,
        MMU_PT_UPDATE_PRESERVE_AD => true,
        command => return Err(UpdateError::UnsupportedCommand { command }),
    };
    let table = request.table();
    if oracle.owner(table) != Some(owner) {
        return Err(UpdateError::TableNotOwned { table });
    }
    let level = oracle
        .page_table_level(table)
        .ok_or(UpdateError::NotAPageTable { table })?;
    let index = request.index();
    if !guest_slot(level, index) {
        return Err(UpdateError::XenSlot { index });
    }
    // Hold the table as an LN table for the write, so its entries' references
    // cannot be dropped by a de-validation racing with this update.
    oracle
        .get_ref(table, owner)
        .map_err(|_| UpdateError::TableNotOwned { table })?;
    let held = PvType::Table(level);
    if oracle.get_type(table, held).is_err() {
        oracle.put_ref(table);
        return Err(UpdateError::TableBusy { table });
    }
    let result = match table_entries(mem, table).and_then(|entries| entries.get(index as usize)) {
        Some(entry) => write_entry(
            oracle,
            config,
            owner,
            table,
            level,
            entry,
            request.val,
            preserve_ad,
        ),
        None => Err(UpdateError::Unreachable { table }),
    };
    oracle.put_type(table, held);
    oracle.put_ref(table);
    result
}

/// Checks and writes one entry of a held table.
#[allow(clippy::too_many_arguments)]
fn write_entry<O: FrameOracle + ?Sized>(
    oracle: &O,
    config: &PvConfig,
    owner: O::Domain,
    table: Mfn,
    level: PvLevel,
    entry: &AtomicU64,
    val: u64,
    preserve_ad: bool,
) -> Result<(), UpdateError> {
    let old = entry.load(Ordering::Acquire);
    let new = with_ad(val, old, preserve_ad);
    let new_present = new & PRESENT != 0;
    if new_present {
        config.check_bits(new, level)?;
    }
    let old_present = old & PRESENT != 0;
    let same_target = old_present && new_present && (old ^ new) & !FAST_PATH_FLAGS == 0;
    if same_target {
        // The fast path: the references the entry holds do not change.
        return swap(entry, old, val, preserve_ad).map(|_| ());
    }
    if new_present {
        take_entry(oracle, config, owner, table, level, new)?;
    }
    match swap(entry, old, val, preserve_ad) {
        Ok(replaced) => {
            if replaced & PRESENT != 0 {
                drop_entry(oracle, level, replaced);
            }
            Ok(())
        }
        Err(error) => {
            if new_present {
                drop_entry(oracle, level, new);
            }
            Err(error)
        }
    }
}

/// The entry to write over `current`: `val`, with `current`'s accessed and
/// dirty bits when preserving them.
const fn with_ad(val: u64, current: u64, preserve_ad: bool) -> u64 {
    if preserve_ad {
        (val & !(ACCESSED | DIRTY)) | (current & (ACCESSED | DIRTY))
    } else {
        val
    }
}

/// Replaces `expected` with the new entry, tolerating accessed/dirty bits
/// set meanwhile (a bounded number of times), and returns the value
/// replaced. Anything else changing is [`UpdateError::EntryChanged`].
pub(super) fn swap(
    entry: &AtomicU64,
    expected: u64,
    val: u64,
    preserve_ad: bool,
) -> Result<u64, UpdateError> {
    let mut current = expected;
    for _ in 0..AD_RETRIES {
        let new = with_ad(val, current, preserve_ad);
        match entry.compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(replaced) => return Ok(replaced),
            Err(seen) if (seen ^ expected) & !(ACCESSED | DIRTY) == 0 => current = seen,
            Err(_) => return Err(UpdateError::EntryChanged),
        }
    }
    Err(UpdateError::EntryChanged)
}
