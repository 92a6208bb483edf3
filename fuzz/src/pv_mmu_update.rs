//! The `pv_mmu_update` target: arbitrary guest batches against the PV
//! validator, through the real frame table (hvmem-frametable's `pagetable`
//! feature).
//!
//! Input layout: a configuration byte (MAXPHYADDR 46 or 52, cache
//! attributes, validation budget 512 / 61 / 7 entries per call), then
//! operations of one tag byte and its arguments: an `mmu_update` batch of
//! up to eight requests (each built from a table, an index, a command, a
//! target and flag bits, or taken raw), a pin or unpin of a frame at a
//! level for either domain, or a raw write into a frame that no page-table
//! type protects (the guest filling a page before it pins it).
//!
//! Sixteen frames: 0..=11 belong to domain 1 (0 -> 1 -> 2 -> 3 is an
//! L4 -> L3 -> L2 -> L1 chain, pinned at the root), 12 and 13 to domain 2,
//! 14 and 15 are free; requests may also name frames beyond the table or
//! beyond MAXPHYADDR. Domain 1 sends every batch.
//!
//! After every operation it checks, for every validated table in use: each
//! present guest entry keeps its level's flag rules, maps a frame of the
//! table's owner, never maps a page-table frame writable, and an upper entry
//! points only at a validated table of the next lower level; and every
//! frame's general and type counts are exactly its allocation reference, its
//! pin and the entries pointing at it. A refused request must leave its
//! entry unchanged. A preempted validation is resumed until it finishes, so
//! no frame stays half-validated.

use core::sync::atomic::{AtomicU64, Ordering};

use hvmem_frametable::pv::PvValidator;
use hvmem_frametable::{FrameError, FrameInfo, FrameTable, FrameType, Owner};
use hvmem_pagetable::pv::{ENTRIES, MmuUpdate, PvConfig, UpdateError, XEN_L4_SLOTS, mmu_update};
use hvmem_pagetable::{PhysMem, SliceMem};
use hvmem_types::{DomId, FrameRange, Mfn, PhysAddr};

use crate::bytes::Bytes;

const FRAMES: u64 = 16;
const D1: Owner = Owner::Domain(DomId::new(1));
const D2: Owner = Owner::Domain(DomId::new(2));
const P: u64 = 1;
const RW: u64 = 2;
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// Enough resumptions for any validation of sixteen frames at 7 entries per
/// call.
const MAX_RESUMES: u32 = 4096;
const TYPES: [FrameType; 4] = [FrameType::L1, FrameType::L2, FrameType::L3, FrameType::L4];

struct World<'a> {
    mem: &'a SliceMem<'a>,
    table: &'a FrameTable<'a>,
    validator: &'a PvValidator<'a, SliceMem<'a>>,
    /// The type each frame is pinned as, if any.
    pins: [Option<FrameType>; FRAMES as usize],
    cache_attributes: bool,
}

impl World<'_> {
    fn entries(&self, mfn: u64) -> &[AtomicU64] {
        self.mem.table(PhysAddr::new(mfn << 12), 512).unwrap()
    }

    fn pin(&mut self, mfn: u64, owner: Owner, ty: FrameType) {
        let mut result = Err(FrameError::Preempted { mfn: Mfn::new(mfn) });
        for _ in 0..MAX_RESUMES {
            result = self.table.pin(Mfn::new(mfn), owner, ty, self.validator);
            if !matches!(result, Err(FrameError::Preempted { .. })) {
                break;
            }
        }
        match result {
            Ok(()) => {
                assert!(self.pins[mfn as usize].is_none(), "pinned twice: {mfn}");
                self.pins[mfn as usize] = Some(ty);
            }
            Err(FrameError::Preempted { .. }) => panic!("validation of {mfn} never finished"),
            Err(_) => {}
        }
    }

    fn unpin(&mut self, mfn: u64, owner: Owner) {
        let result = self.table.unpin(Mfn::new(mfn), owner, self.validator);
        assert_eq!(
            result.is_ok(),
            self.pins[mfn as usize].is_some() && owner_of(mfn) == Some(owner)
        );
        if result.is_ok() {
            self.pins[mfn as usize] = None;
        }
    }

    fn entry(&self, r: &MmuUpdate) -> Option<u64> {
        let table = r.ptr >> 12;
        (table < FRAMES).then(|| self.entries(table)[r.index() as usize].load(Ordering::Relaxed))
    }

    fn batch(&self, requests: &[MmuUpdate]) {
        let before: Vec<Option<u64>> = requests.iter().map(|r| self.entry(r)).collect();
        let oracle = self.validator.oracle(self.table);
        let mut start = 0;
        for _ in 0..MAX_RESUMES {
            let rest = requests.get(start..).unwrap_or(&[]);
            match mmu_update(self.mem, &oracle, self.validator.config(), D1, rest) {
                Ok(n) => {
                    assert_eq!(n, rest.len());
                    return;
                }
                Err(e) => {
                    assert!(e.done < rest.len());
                    let at = start + e.done;
                    let refused = requests[at];
                    let named_earlier = requests[..at]
                        .iter()
                        .any(|r| r.ptr & !7 == refused.ptr & !7);
                    if !named_earlier {
                        assert_eq!(
                            self.entry(&refused),
                            before[at],
                            "refused request changed its entry: {:?}",
                            e.error
                        );
                    }
                    let retry = matches!(
                        e.error,
                        UpdateError::Entry(hvmem_pagetable::pv::EntryError::Retry { .. })
                    );
                    if !retry {
                        return;
                    }
                    // A target's validation was preempted: resume it.
                    start = at;
                }
            }
        }
        panic!("a batch never finished its targets' validation");
    }

    fn check(&self, config: &PvConfig) {
        let mut refs = [0u64; FRAMES as usize];
        let mut type_refs = [0u64; FRAMES as usize];
        for mfn in 0..FRAMES {
            let state = self.table.state(Mfn::new(mfn)).unwrap();
            assert!(!state.partial, "{mfn} left half-validated");
            assert_eq!(
                state.pinned,
                self.pins[mfn as usize].is_some(),
                "pin of {mfn}"
            );
            refs[mfn as usize] += u64::from(state.allocated);
            if let Some(ty) = self.pins[mfn as usize] {
                assert_eq!(state.frame_type, ty);
                refs[mfn as usize] += 1;
                type_refs[mfn as usize] += 1;
            }
        }
        for mfn in 0..FRAMES {
            let state = self.table.state(Mfn::new(mfn)).unwrap();
            let Some(level) = TYPES.iter().position(|&t| t == state.frame_type) else {
                continue;
            };
            if state.type_refs == 0 || !state.validated {
                continue;
            }
            for (index, entry) in self.entries(mfn).iter().enumerate() {
                let raw = entry.load(Ordering::Relaxed);
                if raw & P == 0 || (level == 3 && XEN_L4_SLOTS.contains(&(index as u32))) {
                    continue;
                }
                // PWT, PCD, PSE/PAT, GLOBAL; at L1 GLOBAL is allowed, and the
                // cache bits too for a guest with I/O resources.
                let refused = match (level, self.cache_attributes) {
                    (0, true) => 0,
                    (0, false) => 0x98,
                    _ => 0x198,
                };
                assert_eq!(raw & refused, 0, "L{} {mfn}[{index}] = {raw:#x}", level + 1);
                assert_eq!(raw & ADDRESS & !config.address_mask(), 0, "reserved bits");
                let target = (raw & ADDRESS) >> 12;
                assert!(target < FRAMES, "{mfn}[{index}] maps {target}, not a frame");
                let t = self.table.state(Mfn::new(target)).unwrap();
                assert_eq!(t.owner, state.owner, "{mfn}[{index}] maps a foreign frame");
                refs[target as usize] += 1;
                if level == 0 {
                    if raw & RW != 0 {
                        assert_eq!(
                            t.frame_type,
                            FrameType::Writable,
                            "{mfn}[{index}] maps {target} writable"
                        );
                        type_refs[target as usize] += 1;
                    }
                } else {
                    assert_eq!(t.frame_type, TYPES[level - 1], "{mfn}[{index}] -> {target}");
                    assert!(t.validated);
                    type_refs[target as usize] += 1;
                }
            }
        }
        for mfn in 0..FRAMES {
            let state = self.table.state(Mfn::new(mfn)).unwrap();
            assert_eq!(
                (state.refs, state.type_refs),
                (refs[mfn as usize], type_refs[mfn as usize]),
                "counts of frame {mfn}"
            );
        }
    }
}

fn owner_of(mfn: u64) -> Option<Owner> {
    match mfn {
        0..=11 => Some(D1),
        12 | 13 => Some(D2),
        _ => None,
    }
}

/// Frame bytes: mostly the table's frames, sometimes just beyond it.
fn frame(b: u8) -> u64 {
    u64::from(b % 20)
}

/// Flag bits 0..=9 as PTE bits 0..=9, then NX, a bit above MAXPHYADDR 46,
/// an available high bit, and PTE bit 51.
fn flags(bits: u16) -> u64 {
    let mut raw = u64::from(bits & 0x3ff);
    for (from, to) in [(10, 63), (11, 47), (12, 52), (13, 51)] {
        if bits & (1 << from) != 0 {
            raw |= 1 << to;
        }
    }
    raw
}

fn request(input: &mut Bytes<'_>) -> MmuUpdate {
    let kind = input.u8();
    if kind & 0xf == 0 {
        return MmuUpdate {
            ptr: input.u64(),
            val: input.u64(),
        };
    }
    let table = frame(input.u8());
    let index = match input.u8() {
        i @ 0..=15 => u64::from(i),
        i => u64::from(i) * 2,
    };
    let command = u64::from(kind >> 6) & 3;
    let target = frame(input.u8());
    MmuUpdate {
        ptr: (table << 12) | (index << 3) | if kind & 0x30 == 0x30 { command } else { 0 },
        val: (target << 12) | flags(input.u16()),
    }
}

/// Runs the operations `data` decodes to; panics on a broken rule.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let setup = input.u8();
    let mut config = PvConfig::new(if setup & 1 == 0 { 46 } else { 52 }).unwrap();
    if setup & 2 != 0 {
        config = config.with_cache_attributes();
    }
    let budget = [ENTRIES, 61, 7, ENTRIES][usize::from(setup >> 2) & 3];

    let words: Vec<AtomicU64> = (0..FRAMES as usize * 512)
        .map(|_| AtomicU64::new(0))
        .collect();
    let mem = SliceMem::new(PhysAddr::new(0), &words);
    let infos: Vec<FrameInfo> = (0..FRAMES).map(|_| FrameInfo::new()).collect();
    let table = FrameTable::new(&infos, &[FrameRange::new(Mfn::new(0), FRAMES).unwrap()]).unwrap();
    for mfn in 0..FRAMES {
        if let Some(owner) = owner_of(mfn) {
            table.assign(Mfn::new(mfn), owner).unwrap();
        }
    }
    let validator = PvValidator::new(&mem, config).with_budget(budget);
    let mut world = World {
        mem: &mem,
        table: &table,
        validator: &validator,
        pins: [None; FRAMES as usize],
        cache_attributes: setup & 2 != 0,
    };
    for (mfn, raw) in [(0, 1 << 12), (1, 2 << 12), (2, 3 << 12), (3, 4 << 12)] {
        world.entries(mfn)[0].store(raw | P | RW, Ordering::Relaxed);
    }
    world.pin(0, D1, FrameType::L4);
    world.check(&config);

    let mut ops = 0;
    while !input.is_empty() && ops < 64 {
        ops += 1;
        match input.u8() % 4 {
            0 | 1 => {
                let n = usize::from(input.u8() % 8) + 1;
                let requests: Vec<MmuUpdate> = (0..n).map(|_| request(&mut input)).collect();
                world.batch(&requests);
            }
            2 => {
                let b = input.u8();
                let mfn = u64::from(b % 16);
                let owner = if b & 0x40 == 0 { D1 } else { D2 };
                if b & 0x80 == 0 {
                    world.pin(mfn, owner, TYPES[usize::from(b >> 4) & 3]);
                } else if world.pins[mfn as usize].is_some() || b & 0x10 != 0 {
                    world.unpin(mfn, owner);
                }
            }
            _ => {
                // The guest writes a page no page-table type protects.
                let mfn = u64::from(input.u8() % 16);
                let index = usize::from(input.u16()) % 512;
                let raw = if input.u8() & 1 == 0 {
                    (u64::from(input.u8() % 20) << 12) | flags(input.u16())
                } else {
                    input.u64()
                };
                let state = table.state(Mfn::new(mfn)).unwrap();
                let protected = state.type_refs > 0 && TYPES.contains(&state.frame_type);
                if !protected {
                    world.entries(mfn)[index].store(raw, Ordering::Relaxed);
                }
            }
        }
        world.check(&config);
    }
}
