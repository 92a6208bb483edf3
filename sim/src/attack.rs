//! The malicious guest: arbitrary hypercalls with arbitrary arguments,
//! interleaved with honest guests, with every invariant checked after every
//! call.
//!
//! The attacker is an ordinary PV guest with its own memory. What it sends
//! is decoded from a byte stream ([`Source`]): from fuzzer input in the
//! `host` fuzz target, from a seeded generator in `hvmem-sim attack`. Frame
//! numbers are drawn from its own frames (so that it can build and pin page
//! tables and attack from inside its own allowance), from anywhere in the
//! host (honest guests' frames, the hypervisor's own) and from outside it;
//! domain ids from itself, `DOMID_SELF`, the victims, the control domain
//! and junk. The calls: `mmu_update` batches with any command, entry
//! address and value; `mmuext_op` with any command and frame; every
//! reservation op with any domain, list, count (up to past the list and
//! past `UINT_MAX >> 6`), order, flags and continuation start;
//! `claim_pages`, `current_reservation`, `maximum_reservation`;
//! `grant_table_op` (maps of any domain's grant refs, the honest
//! frontends' live ones included, unmaps of any handle, copies between any
//! grants and frames, table setup and size queries of any domain, version
//! switches, rewrites of its own entries), `tmem_op` (any command on its
//! own pool slots, which is all a client can name, any flags, keys and
//! frames, the victims' included) and unknown hypercalls. Balloon requests
//! beyond its max are just populate calls that run into `max_pages`. A kind
//! byte of `0xff` kills the attacker instead: its domain is destroyed with
//! whatever page tables, pins and zombie frames it built (the frame table's
//! preemptible `relinquish`), every frame must come back, and it is built
//! again.
//!
//! After every call: the counters ([`Host::check_counters`]) and a sample
//! of every honest guest's data; every `audit_every` calls: the full audit
//! and all honest data. Honest guests step between hostile calls.

use std::collections::BTreeMap;
use std::fmt;

use hvmem_pagetable::pv::MmuUpdate;
use hvmem_types::{DomId, Gfn};

use crate::guest::{Guest, Workload};
use crate::host::{Host, HostConfig, HostStorage};
use crate::hypercall::{CONTROL_DOMAIN, Hypercall, MemoryArg, MmuextOp, Reservation};
use crate::invariants::Violation;
use crate::rng::Rng;

/// Where hostile arguments come from.
pub trait Source {
    /// The next byte; `None` when the input is exhausted.
    fn byte(&mut self) -> Option<u8>;

    /// The next eight bytes as a little-endian word (missing bytes are 0).
    fn word(&mut self) -> u64 {
        (0..8).fold(0, |w, i| w | u64::from(self.byte().unwrap_or(0)) << (8 * i))
    }
}

/// Fuzzer bytes.
#[derive(Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// Seeded random bytes, never exhausted.
#[derive(Debug)]
pub struct Random(pub Rng);

impl Source for Random {
    fn byte(&mut self) -> Option<u8> {
        Some(self.0.next_u64() as u8)
    }

    fn word(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// The attacker's domain id.
pub const ATTACKER: DomId = DomId::new(0x666);

/// A small world: honest guests and the attacker on one host.
pub struct World<'s> {
    /// The host.
    pub host: Host<'s>,
    /// The honest guests.
    pub guests: Vec<Guest>,
    /// Split-driver I/O among them (the first is the backend).
    io: Option<crate::splitio::SplitIo>,
    /// The attacker's physmap size.
    attacker_pages: u64,
    now: u64,
    calls: u64,
    audit_every: u64,
    /// Full audits run.
    pub audits: u64,
    /// Times the attacker was destroyed and rebuilt.
    pub deaths: u64,
    /// Return values seen, per hypercall name.
    pub results: BTreeMap<(&'static str, i64), u64>,
}

impl fmt::Debug for World<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("host", &self.host)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

/// A light workload for the honest guests of an attack: short phases and
/// page-table churn, few accesses (the attack is the point).
const fn victim_workload() -> Workload {
    Workload {
        accesses_per_sec: 16,
        fault_in_per_sec: 64,
        phase_secs: 20,
        ..Workload::churn()
    }
}

impl<'s> World<'s> {
    /// Boots a host over `storage` with `guests` honest guests and the
    /// attacker, each with an equal share (the attacker's maximum is twice
    /// its share, so that it can push against the host).
    ///
    /// # Errors
    ///
    /// [`Violation`] if the world cannot be built.
    pub fn new(
        storage: &'s mut HostStorage,
        guests: u16,
        seed: u64,
        audit_every: u64,
    ) -> Result<Self, Violation> {
        let mut host = Host::boot(storage).map_err(|_| Violation::FramesNotConserved)?;
        let share = host.guest_frames() / (u64::from(guests) + 2);
        let mut honest = Vec::new();
        for i in 0..guests {
            let id = DomId::new(1 + i);
            host.create_domain(id, share * 3 / 2, share)
                .map_err(|_| Violation::FramesNotConserved)?;
            honest.push(Guest::new(
                id,
                share * 3 / 2,
                share,
                victim_workload(),
                seed,
            ));
        }
        host.create_domain(ATTACKER, share * 2, share)
            .map_err(|_| Violation::FramesNotConserved)?;
        let io = crate::splitio::SplitIo::new(&mut host, &mut honest)?;
        Ok(Self {
            host,
            guests: honest,
            io,
            attacker_pages: share * 2,
            now: 0,
            calls: 0,
            audit_every: audit_every.max(1),
            audits: 0,
            deaths: 0,
            results: BTreeMap::new(),
        })
    }

    /// One second of every honest guest.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn honest_step(&mut self) -> Result<(), Violation> {
        for g in &mut self.guests {
            g.step(&mut self.host, self.now)?;
        }
        if let Some(io) = self.io.as_mut() {
            io.step(&mut self.host)?;
        }
        self.now += 1;
        self.check()
    }

    fn check(&mut self) -> Result<(), Violation> {
        self.host.check_counters()?;
        for g in &mut self.guests {
            g.check_data(&self.host, Some(4))?;
        }
        Ok(())
    }

    /// The full audit and every honest page.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn audit(&mut self) -> Result<(), Violation> {
        self.host.audit()?;
        self.audits += 1;
        for g in &mut self.guests {
            g.check_data(&self.host, None)?;
        }
        Ok(())
    }

    /// The attacker dies (its domain is destroyed with whatever page tables,
    /// pins and zombie frames it built) and is built again. Every frame it
    /// held must come back.
    fn rebirth(&mut self) -> Result<(), Violation> {
        let held = self.host.domain(ATTACKER).map_or(0, |d| d.owned());
        self.host
            .destroy_domain(ATTACKER)
            .map_err(|left| Violation::DomainPages {
                domid: ATTACKER,
                books: held,
                frames: left,
            })?;
        self.deaths += 1;
        self.check()?;
        self.audit()?;
        let share = self.attacker_pages / 2;
        self.host
            .create_domain(ATTACKER, self.attacker_pages, share)
            .map_err(|_| Violation::FramesNotConserved)?;
        self.check()
    }

    fn frame(&self, src: &mut dyn Source) -> u64 {
        let first = self.host.first_mfn().get();
        let n = self.host.total_frames();
        let pick = src.byte().unwrap_or(0);
        let w = src.word();
        match pick % 8 {
            // One of its own frames (through its physmap).
            0..=3 => self
                .host
                .domain(ATTACKER)
                .and_then(|d| d.mfn(Gfn::new(w % self.attacker_pages)))
                .map_or(first + w % n, |m| m.get()),
            // Anywhere in the host: victims' and the hypervisor's frames.
            4..=6 => first + w % n,
            // Anything at all.
            _ => w,
        }
    }

    /// A hostile `struct tmem_op`: any command (mostly the page commands),
    /// pool ids of its own, of nobody's, negative and junk (a client names
    /// only its own pools, so the victims' pool ids name its own slots),
    /// any flags and UUID for a new pool, any object id and index, and a
    /// frame from anywhere.
    fn tmem_op(&self, src: &mut dyn Source) -> hvmem_tmem_pool::abi::TmemOp {
        let cmd = match src.byte().unwrap_or(0) % 16 {
            0..=2 => hvmem_tmem_pool::abi::TMEM_NEW_POOL,
            3 => hvmem_tmem_pool::abi::TMEM_DESTROY_POOL,
            4..=7 => hvmem_tmem_pool::abi::TMEM_PUT_PAGE,
            8..=10 => hvmem_tmem_pool::abi::TMEM_GET_PAGE,
            11 => hvmem_tmem_pool::abi::TMEM_FLUSH_PAGE,
            12 => hvmem_tmem_pool::abi::TMEM_FLUSH_OBJECT,
            _ => u32::from(src.byte().unwrap_or(0)),
        };
        let pool_id = match src.byte().unwrap_or(0) % 8 {
            0..=5 => i32::from(src.byte().unwrap_or(0) % 4),
            6 => -1,
            _ => src.word() as i32,
        };
        let flags = match src.byte().unwrap_or(0) % 4 {
            0 => hvmem_tmem_pool::abi::PRIVATE_EPHEMERAL,
            1 => hvmem_tmem_pool::abi::PRIVATE_PERSISTENT,
            2 => hvmem_tmem_pool::abi::SHARED_EPHEMERAL,
            _ => src.word() as u32,
        };
        let oid = [u64::from(src.byte().unwrap_or(0) % 4), 0, 0];
        let words = if cmd == hvmem_tmem_pool::abi::TMEM_NEW_POOL {
            [src.word(), src.word(), u64::from(flags)]
        } else {
            oid
        };
        hvmem_tmem_pool::abi::TmemOp {
            cmd,
            pool_id,
            words,
            index: u32::from(src.byte().unwrap_or(0) % 8),
            tmem_offset: 0,
            pfn_offset: 0,
            len: 0,
            cmfn: self.frame(src),
        }
    }

    /// A hostile `grant_table_op`: maps of any domain's grant refs (the
    /// honest frontends' live ones included) with any flags, unmaps of any
    /// handle with any addresses, copies between any grants and frames,
    /// `setup_table` and `query_size` of any domain with any size and list,
    /// `set_version` to anything, swaps of its own entries, `get_version`
    /// and `get_status_frames` of any domain, `unmap_and_replace` of any
    /// handle and addresses, `cache_flush` of any frame, range and flags,
    /// transfers, counts past the array, unknown commands.
    /// The attacker's own entries are rewritten at random too (it owns its
    /// table's frames).
    fn grant_op(&mut self, src: &mut dyn Source) -> i64 {
        use hvmem_grant::{
            GnttabCacheFlush, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabGetVersion,
            GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
            GnttabSwapGrantRef, GnttabTransfer, GnttabUnmapAndReplace, GnttabUnmapGrantRef,
            GrantRef,
        };
        let kind = src.byte().unwrap_or(0);
        let n = 1 + usize::from(src.byte().unwrap_or(0) % 3);
        let count = match src.byte().unwrap_or(0) % 8 {
            0 => src.word() as u32,
            1 => 0,
            _ => n as u32,
        };
        let gref = |src: &mut dyn Source| match src.byte().unwrap_or(0) % 4 {
            0..=2 => u32::from(src.byte().unwrap_or(0) % 16),
            _ => src.word() as u32,
        };
        let call = |host: &mut Host<'_>, cmd: u32, arg| {
            host.hypercall(ATTACKER, Hypercall::GrantTableOp { cmd, count, arg })
                .rc
        };
        match kind % 10 {
            0..=2 => {
                let mut ops: Vec<GnttabMapGrantRef> = (0..n)
                    .map(|_| GnttabMapGrantRef {
                        host_addr: src.word() & 0xffff_f000,
                        flags: match src.byte().unwrap_or(0) % 4 {
                            0 => 1,
                            1 => 1 | 4,
                            2 => 2 | 1,
                            _ => src.word() as u32,
                        },
                        gref: gref(src),
                        dom: Self::domid(src).get(),
                        ..Default::default()
                    })
                    .collect();
                call(&mut self.host, 0, crate::grant::GrantArg::Map(&mut ops))
            }
            3 | 4 => {
                let mut ops: Vec<GnttabUnmapGrantRef> = (0..n)
                    .map(|_| GnttabUnmapGrantRef {
                        host_addr: src.word() & 0xffff_f000,
                        dev_bus_addr: if src.byte().unwrap_or(0) % 2 == 0 {
                            0
                        } else {
                            self.frame(src) << 12
                        },
                        handle: u32::from(src.byte().unwrap_or(0) % 8),
                        ..Default::default()
                    })
                    .collect();
                call(&mut self.host, 1, crate::grant::GrantArg::Unmap(&mut ops))
            }
            5 | 6 => {
                let mut ops: Vec<GnttabCopy> = (0..n)
                    .map(|_| {
                        let side = |src: &mut dyn Source| {
                            let dom = Self::domid(src).get();
                            let offset = src.word() as u16 % 4200;
                            if src.byte().unwrap_or(0) % 2 == 0 {
                                GnttabCopyPtr::grant(dom, GrantRef(gref(src)), offset)
                            } else {
                                GnttabCopyPtr::frame(dom, self.frame(src), offset)
                            }
                        };
                        let source = side(src);
                        let dest = side(src);
                        GnttabCopy {
                            source,
                            dest,
                            len: src.word() as u16 % 4200,
                            flags: u16::from(src.byte().unwrap_or(0) % 4),
                            ..Default::default()
                        }
                    })
                    .collect();
                call(&mut self.host, 5, crate::grant::GrantArg::Copy(&mut ops))
            }
            7 => {
                let mut op = GnttabSetupTable {
                    dom: Self::domid(src).get(),
                    nr_frames: u32::from(src.byte().unwrap_or(0) % 8),
                    ..Default::default()
                };
                let mut list = vec![0u64; usize::from(src.byte().unwrap_or(0) % 8)];
                call(
                    &mut self.host,
                    2,
                    crate::grant::GrantArg::SetupTable(&mut op, &mut list),
                )
            }
            8 => {
                let mut op = GnttabQuerySize {
                    dom: Self::domid(src).get(),
                    ..Default::default()
                };
                call(
                    &mut self.host,
                    6,
                    crate::grant::GrantArg::QuerySize(&mut op),
                )
            }
            _ => match src.byte().unwrap_or(0) % 10 {
                0 => {
                    let mut op = GnttabSetVersion {
                        version: u32::from(src.byte().unwrap_or(0) % 4),
                    };
                    call(
                        &mut self.host,
                        8,
                        crate::grant::GrantArg::SetVersion(&mut op),
                    )
                }
                1 => {
                    // The attacker rewrites one of its own entries: grant
                    // anything to anyone, or offer any slot for a transfer
                    // from anyone (its table is in its own frames).
                    if let Some(table) = self.host.guest_grant_table(ATTACKER) {
                        let r = GrantRef(gref(src));
                        let (dom, frame) = (Self::domid(src), Gfn::new(self.frame(src)));
                        match src.byte().unwrap_or(0) % 4 {
                            0 | 1 => {
                                let _ = table.grant_access(r, dom, frame, src.byte() == Some(0));
                            }
                            2 => {
                                // A slot in its physmap, or beyond it.
                                let slot = src.word() % (2 * self.attacker_pages.max(1));
                                let _ = table.grant_transfer(r, dom, Gfn::new(slot));
                            }
                            _ => {
                                let _ = table.end_transfer(r);
                            }
                        }
                        let _ = table.end_access(GrantRef(gref(src)));
                    }
                    0
                }
                2 => call(
                    &mut self.host,
                    u32::from(src.byte().unwrap_or(0)),
                    crate::grant::GrantArg::Fault,
                ),
                3 => call(&mut self.host, 0, crate::grant::GrantArg::Fault),
                4 => {
                    // Swaps of its own entries, pinned ones (the honest
                    // backends may map what it grants) and bad refs included.
                    let mut ops: Vec<GnttabSwapGrantRef> = (0..n)
                        .map(|_| GnttabSwapGrantRef {
                            ref_a: gref(src),
                            ref_b: gref(src),
                            ..Default::default()
                        })
                        .collect();
                    call(
                        &mut self.host,
                        11,
                        crate::grant::GrantArg::SwapGrantRef(&mut ops),
                    )
                }
                5 => {
                    let mut op = GnttabGetVersion {
                        dom: Self::domid(src).get(),
                        ..Default::default()
                    };
                    call(
                        &mut self.host,
                        10,
                        crate::grant::GrantArg::GetVersion(&mut op),
                    )
                }
                6 => {
                    let mut op = GnttabGetStatusFrames {
                        nr_frames: match src.byte().unwrap_or(0) % 4 {
                            3 => src.word() as u32,
                            k => u32::from(k),
                        },
                        dom: Self::domid(src).get(),
                        ..Default::default()
                    };
                    let mut list = vec![0u64; usize::from(src.byte().unwrap_or(0) % 4)];
                    call(
                        &mut self.host,
                        9,
                        crate::grant::GrantArg::GetStatusFrames(&mut op, &mut list),
                    )
                }
                7 => {
                    let mut ops: Vec<GnttabUnmapAndReplace> = (0..n)
                        .map(|_| GnttabUnmapAndReplace {
                            host_addr: src.word() & 0xffff_f000,
                            new_addr: match src.byte().unwrap_or(0) % 3 {
                                0 => 0,
                                _ => src.word() & 0xffff_f000,
                            },
                            handle: u32::from(src.byte().unwrap_or(0) % 8),
                            ..Default::default()
                        })
                        .collect();
                    call(
                        &mut self.host,
                        7,
                        crate::grant::GrantArg::UnmapAndReplace(&mut ops),
                    )
                }
                8 => {
                    let mut ops: Vec<GnttabCacheFlush> = (0..n)
                        .map(|_| GnttabCacheFlush {
                            a: self.frame(src) << 12,
                            offset: src.word() as u16 % 4200,
                            length: src.word() as u16 % 4200,
                            op: match src.byte().unwrap_or(0) % 4 {
                                3 => src.word() as u32,
                                k => u32::from(k),
                            },
                        })
                        .collect();
                    call(
                        &mut self.host,
                        12,
                        crate::grant::GrantArg::CacheFlush(&mut ops),
                    )
                }
                _ => {
                    // Half the time a flip to itself: it offers the entry
                    // first, so that the transfer can go all the way.
                    let to_self = src.byte().unwrap_or(0) % 2 == 0;
                    let mut ops: Vec<GnttabTransfer> = (0..n)
                        .map(|_| GnttabTransfer {
                            mfn: self.frame(src),
                            domid: if to_self {
                                ATTACKER.get()
                            } else {
                                Self::domid(src).get()
                            },
                            gref: gref(src),
                            ..Default::default()
                        })
                        .collect();
                    if to_self && let Some(table) = self.host.guest_grant_table(ATTACKER) {
                        for op in &ops {
                            let slot = src.word() % (2 * self.attacker_pages.max(1));
                            let _ =
                                table.grant_transfer(GrantRef(op.gref), ATTACKER, Gfn::new(slot));
                        }
                    }
                    call(
                        &mut self.host,
                        4,
                        crate::grant::GrantArg::Transfer(&mut ops),
                    )
                }
            },
        }
    }

    fn domid(src: &mut dyn Source) -> DomId {
        match src.byte().unwrap_or(0) % 8 {
            0..=2 => DomId::SELF,
            3 => ATTACKER,
            4 => DomId::new(1),
            5 => CONTROL_DOMAIN,
            6 => DomId::new(2),
            _ => DomId::new(src.word() as u16),
        }
    }

    /// Decodes one hostile hypercall from `src`, issues it as the attacker,
    /// and checks the invariants. Returns `false` when `src` ran dry.
    ///
    /// # Errors
    ///
    /// The first [`Violation`].
    pub fn hostile_call(&mut self, src: &mut dyn Source) -> Result<bool, Violation> {
        let Some(kind) = src.byte() else {
            return Ok(false);
        };
        if kind == u8::MAX {
            self.rebirth()?;
            return Ok(true);
        }
        let (name, rc) = match kind % 16 {
            0..=5 => {
                let n = 1 + usize::from(src.byte().unwrap_or(0) % 4);
                let requests: Vec<MmuUpdate> = (0..n)
                    .map(|_| {
                        let table = self.frame(src);
                        let index = u64::from(src.byte().unwrap_or(0)) * 2
                            + u64::from(src.byte().unwrap_or(0) & 1);
                        let cmd = match src.byte().unwrap_or(0) % 8 {
                            0..=4 => 0,
                            5 => 2,
                            6 => 1,
                            c => u64::from(c),
                        };
                        let target = self.frame(src);
                        let flags = src.word();
                        let val = match flags % 4 {
                            // Common flag sets: P, P|RW, P|RW|USER|A|D.
                            0 => target << 12 | 1,
                            1 => target << 12 | 3,
                            2 => target << 12 | 0x67,
                            _ => target << 12 ^ flags,
                        };
                        let val = if cmd == 1 {
                            flags % (self.attacker_pages + 4)
                        } else {
                            val
                        };
                        MmuUpdate {
                            ptr: (table << 12) | ((index % 512) * 8) | cmd,
                            val,
                        }
                    })
                    .collect();
                let foreigndom = if src.byte().unwrap_or(0) < 240 {
                    DomId::SELF
                } else {
                    Self::domid(src)
                };
                let out = self.host.hypercall(
                    ATTACKER,
                    Hypercall::MmuUpdate {
                        requests: &requests,
                        foreigndom,
                    },
                );
                ("mmu_update", out.rc)
            }
            6..=8 => {
                let cmd = match src.byte().unwrap_or(0) % 8 {
                    c @ 0..=4 => u32::from(c),
                    5 => 3,
                    6 => 10,
                    _ => u32::from(src.byte().unwrap_or(0)),
                };
                let mfn = self.frame(src);
                let out = self.host.hypercall(
                    ATTACKER,
                    Hypercall::MmuextOp {
                        ops: &[MmuextOp { cmd, mfn }],
                        foreigndom: DomId::SELF,
                    },
                );
                ("mmuext_op", out.rc)
            }
            9..=12 => {
                let op = match src.byte().unwrap_or(0) % 8 {
                    0 | 1 => 6,
                    2 | 3 => 1,
                    4 => 0,
                    5 => 24,
                    6 => 3,
                    _ => 4,
                };
                let len = usize::from(src.byte().unwrap_or(0) % 9);
                let mut list: Vec<u64> = (0..len)
                    .map(|_| {
                        if op == 6 {
                            src.word() % (self.attacker_pages + 8)
                        } else {
                            self.frame(src)
                        }
                    })
                    .collect();
                let nr = match src.byte().unwrap_or(0) % 8 {
                    0 => src.word(),
                    1 => len as u64 + 1,
                    _ => len as u64,
                };
                let order = match src.byte().unwrap_or(0) % 8 {
                    0..=4 => 0,
                    5 => 9,
                    _ => u32::from(src.byte().unwrap_or(0)),
                };
                let flags = if src.byte().unwrap_or(0) < 200 {
                    0
                } else {
                    src.word() as u32
                };
                let start = if src.byte().unwrap_or(0) < 230 {
                    0
                } else {
                    u64::from(src.byte().unwrap_or(0))
                };
                let domid = Self::domid(src);
                let arg = match (op, src.byte().unwrap_or(0) % 16) {
                    (_, 0) => MemoryArg::Fault,
                    (3 | 4, _) => MemoryArg::Domain(domid),
                    (_, 1) => MemoryArg::Reservation(Reservation {
                        extents: None,
                        nr_extents: nr,
                        extent_order: order,
                        mem_flags: flags,
                        domid,
                    }),
                    _ => MemoryArg::Reservation(Reservation {
                        extents: Some(&mut list),
                        nr_extents: nr,
                        extent_order: order,
                        mem_flags: flags,
                        domid,
                    }),
                };
                let out = self.host.hypercall(
                    ATTACKER,
                    Hypercall::MemoryOp {
                        cmd: start << 6 | op,
                        arg,
                    },
                );
                ("memory_op", out.rc)
            }
            13 => ("grant_table_op", self.grant_op(src)),
            14 => {
                let op = self.tmem_op(src);
                let out = self.host.hypercall(ATTACKER, Hypercall::TmemOp { op });
                ("tmem_op", out.rc)
            }
            _ => {
                let number = u32::from(src.byte().unwrap_or(0));
                let out = self.host.hypercall(ATTACKER, Hypercall::Other { number });
                ("other", out.rc)
            }
        };
        *self.results.entry((name, rc.clamp(-1000, 1))).or_insert(0) += 1;
        self.calls += 1;
        self.check()?;
        if self.calls % self.audit_every == 0 {
            self.audit()?;
        }
        Ok(true)
    }
}

/// Runs fuzzer input: each byte below 32 is an honest second, anything else
/// a hostile call decoded from the bytes that follow. A small host (8 MiB:
/// two honest guests and the attacker of about 2 MiB each), the full audit
/// after every call.
///
/// # Errors
///
/// The first [`Violation`]: a bug the input found.
pub fn replay(data: &[u8]) -> Result<(), Violation> {
    let mut storage = HostStorage::new(HostConfig {
        frames: 2048,
        xen_heap_frames: 16,
    });
    let mut world = World::new(&mut storage, 2, 1, 1)?;
    let mut src = Bytes(data);
    while let Some(b) = src.byte() {
        if b < 32 {
            world.honest_step()?;
        } else if !world.hostile_call(&mut src)? {
            break;
        }
    }
    world.audit()
}

/// A long campaign: `hvmem-sim attack`.
#[derive(Clone, Copy, Debug)]
pub struct Campaign {
    /// Host memory, MiB.
    pub host_mib: u64,
    /// Honest guests.
    pub guests: u16,
    /// Seed of the attack and of the honest workloads.
    pub seed: u64,
    /// Hostile hypercalls.
    pub steps: u64,
}

/// What a campaign did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The campaign.
    pub campaign: Campaign,
    /// Return values per hypercall (errnos below -1000 folded).
    pub results: BTreeMap<(&'static str, i64), u64>,
    /// Full audits run.
    pub audits: u64,
    /// Times the attacker was destroyed and rebuilt.
    pub deaths: u64,
    /// Honest seconds interleaved.
    pub honest_seconds: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.campaign;
        writeln!(
            f,
            "hvmem-sim attack: {} hostile hypercalls against {} honest guests on a {} MiB host, seed {}",
            c.steps, c.guests, c.host_mib, c.seed
        )?;
        writeln!(
            f,
            "every invariant held after every call ({} full audits, {} honest seconds interleaved, attacker destroyed and rebuilt {} times)",
            self.audits, self.honest_seconds, self.deaths
        )?;
        writeln!(f, "\n{:<16} {:>8} {:>10}", "hypercall", "rc", "calls")?;
        for ((name, rc), n) in &self.results {
            let rc = if *rc == 1 {
                ">0".to_string()
            } else {
                rc.to_string()
            };
            writeln!(f, "{name:<16} {rc:>8} {n:>10}")?;
        }
        Ok(())
    }
}

/// Runs a campaign, calling `progress(call)` after each hostile call.
///
/// # Errors
///
/// The first [`Violation`].
pub fn run(campaign: &Campaign, progress: &mut dyn FnMut(u64)) -> Result<Summary, Violation> {
    let mut storage = HostStorage::new(HostConfig::with_mib(campaign.host_mib));
    let mut world = World::new(&mut storage, campaign.guests, campaign.seed, 1000)?;
    let mut src = Random(Rng::new(campaign.seed));
    let mut honest = 0;
    for i in 0..campaign.steps {
        if i % 16 == 0 {
            world.honest_step()?;
            honest += 1;
        }
        world.hostile_call(&mut src)?;
        progress(i);
    }
    world.audit()?;
    Ok(Summary {
        campaign: *campaign,
        results: world.results,
        audits: world.audits,
        deaths: world.deaths,
        honest_seconds: honest,
    })
}
