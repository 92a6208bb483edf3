//! The `balloon` target: arbitrary event sequences to the Xen and virtio
//! balloon machines, checked against simple models.
//!
//! Input layout: a selector byte (0 mod 4: the virtio device and driver,
//! 2 mod 4: the virtio driver's free page hinting and reporting, odd: Xen), a few
//! configuration bytes, then events of one tag byte and their arguments.
//! Many events are hostile by construction (PFNs past guest memory,
//! repeated pages, garbage buffers, lying hypercall results, targets above
//! static-max). The oracle: a refused event leaves the machine equal to its
//! clone from before; accepted ones match the model; conservation holds
//! after every event.

use std::collections::BTreeSet;

use hvmem_balloon_proto::GuestPages;
use hvmem_balloon_proto::virtio::blocks::FreeBlock;
use hvmem_balloon_proto::virtio::device::{BalloonDevice, DeviceConfig, HostAction};
use hvmem_balloon_proto::virtio::driver::{BalloonDriver as VirtioDriver, DriverStep};
use hvmem_balloon_proto::virtio::features::{Features, GuestPoisoning};
use hvmem_balloon_proto::virtio::hinter::{FreePageHinter, HintStep, hinter_storage_words};
use hvmem_balloon_proto::virtio::reporter::{FreePageReporter, ReportStep, reporter_storage_words};
use hvmem_balloon_proto::virtio::stats::Stats;
use hvmem_balloon_proto::xen::abi::MemoryOp;
use hvmem_balloon_proto::xen::domain::HostMemory;
use hvmem_balloon_proto::xen::driver::{BalloonDriver as XenDriver, DriverConfig, GuestKind, Step};
use hvmem_balloon_proto::xen::selfballoon::{MemInfo, SelfBalloon, SelfBalloonConfig};
use hvmem_balloon_proto::xen::toolstack::{DomainBounds, Mode, Toolstack};
use hvmem_types::{DomId, Gfn};

use crate::bytes::Bytes;

/// Events per input, so that a long input cannot run for ever.
const MAX_STEPS: usize = 2048;

/// Runs one input. Panics on any disagreement with the model.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    match input.u8() % 4 {
        0 => virtio(&mut input),
        2 => free_blocks(&mut input),
        _ => xen(&mut input),
    }
}

/// The guest kernel's free pages.
struct Free(BTreeSet<u64>);

impl GuestPages for Free {
    fn alloc_page(&mut self) -> Option<Gfn> {
        self.0.pop_first().map(Gfn::new)
    }
    fn free_page(&mut self, gfn: Gfn) {
        assert!(self.0.insert(gfn.get()), "{gfn} freed twice");
    }
}

fn pfn_buffer(input: &mut Bytes<'_>, guest_pages: u64) -> (Vec<u8>, Vec<u32>) {
    let n = usize::from(input.u8() % 24);
    let pfns: Vec<u32> = (0..n)
        .map(|_| match input.u8() % 8 {
            0 => input.u64() as u32,
            _ => u32::from(input.u16()) % (guest_pages as u32 + 4),
        })
        .collect();
    (pfns.iter().flat_map(|p| p.to_le_bytes()).collect(), pfns)
}

fn virtio(input: &mut Bytes<'_>) {
    let guest_pages = u64::from(input.u16() % 600) + 1;
    let host_page_shift = [12, 13, 14, 16, 21][usize::from(input.u8() % 5)];
    let offered = Features::from_bits_truncate(u64::from(input.u8() & 0x3f)) | Features::VERSION_1;
    let per = 1u64 << (host_page_shift - 12);
    let config = DeviceConfig {
        offered,
        guest_pages,
        host_page_shift,
        require_must_tell_host: input.u8() & 1 == 0,
        first_hint_id: 2 + u32::from(input.u8()),
        legacy_big_endian: false,
    };
    let pieces = vec![0u64; hvmem_balloon_proto::virtio::device::piece_storage_words(guest_pages)];
    let host = vec![
        0u64;
        hvmem_balloon_proto::virtio::device::host_page_storage_words(
            guest_pages,
            host_page_shift
        )
    ];
    let mut dev = BalloonDevice::new(config, pieces, host).unwrap();
    // A driver of the same guest, driven alongside, whose requests must
    // always be accepted.
    let mut drv = VirtioDriver::new(
        offered,
        GuestPoisoning {
            poisons_free_pages: false,
        },
        0,
        guest_pages,
        12,
        vec![0u64; hvmem_balloon_proto::virtio::driver::driver_storage_words(guest_pages, 12)],
    )
    .unwrap();
    let mut guest = Free((0..guest_pages).collect());
    let mut model: BTreeSet<u64> = BTreeSet::new();
    let mut discarded: i64 = 0;
    // Whether the device's balloon holds only the driver's pages.
    let mut driver_owns_balloon = true;

    let mut steps = 0;
    while !input.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let before = dev.clone();
        let mut emitted: i64 = 0;
        let mut emit = |a: HostAction| match a {
            HostAction::Discard { pages, .. } => emitted += pages as i64,
            HostAction::Reclaim { pages, .. } => emitted -= pages as i64,
            HostAction::ConfigChanged => {}
        };
        let refused = match input.u8() % 14 {
            0 | 1 => {
                let (bytes, pfns) = pfn_buffer(input, guest_pages);
                let inflate = input.u8() & 1 == 0;
                let distinct = pfns.iter().collect::<BTreeSet<_>>().len() == pfns.len();
                let ok = dev.is_running()
                    && distinct
                    && pfns.iter().all(|&p| {
                        u64::from(p) < guest_pages && model.contains(&u64::from(p)) != inflate
                    });
                let r = if inflate {
                    dev.inflate(&bytes, &mut emit)
                } else {
                    dev.deflate(&bytes, &mut emit)
                };
                assert_eq!(r.is_ok(), ok, "{r:?} for {pfns:?}");
                if r.is_ok() {
                    driver_owns_balloon &= pfns.is_empty();
                    for p in pfns {
                        if inflate {
                            model.insert(u64::from(p));
                        } else {
                            model.remove(&u64::from(p));
                        }
                    }
                }
                r.is_err()
            }
            2 => {
                let len = usize::from(input.u8());
                let bytes: Vec<u8> = (0..len).map(|_| input.u8()).collect();
                let r = dev.inflate(&bytes, &mut emit);
                if let Ok(()) = r {
                    driver_owns_balloon &= bytes.is_empty();
                    for c in bytes.chunks_exact(4) {
                        model.insert(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                    }
                }
                r.is_err()
            }
            3 => {
                let r = dev.set_num_pages(input.u16().into());
                if r.is_ok() {
                    drv.config_changed(dev.num_pages());
                }
                r.is_err()
            }
            4 => {
                let offset = u32::from(input.u8() % 20);
                let len = usize::from(input.u8() % 6);
                let bytes: Vec<u8> = (0..len).map(|_| input.u8()).collect();
                let mut out = [0u8; 4];
                let _ = dev.read_config(offset, &mut out[..len.min(4)]);
                dev.write_config(offset, &bytes).is_err()
            }
            5 => {
                let len = usize::from(input.u16() % 300);
                let bytes: Vec<u8> = (0..len).map(|_| input.u8()).collect();
                dev.stats_buffer(&bytes).is_err()
            }
            6 => dev.request_stats().is_err(),
            7 => match input.u8() % 3 {
                0 => dev.start_hinting().is_err(),
                1 => dev.stop_hinting().is_err(),
                _ => dev.done_hinting().is_err(),
            },
            8 => {
                let id = if input.u8() & 1 == 0 {
                    dev.hint_cmd_id()
                } else {
                    input.u64() as u32
                };
                dev.hint_command(&id.to_le_bytes()).is_err()
            }
            9 => {
                let addr = u64::from(input.u16()) << (input.u8() % 13);
                let len = u64::from(input.u16()) << (input.u8() % 13);
                dev.hint_pages(addr, len).is_err()
            }
            10 => {
                let n = usize::from(input.u8() % 5);
                let ranges: Vec<(u64, u64)> = (0..n)
                    .map(|_| (u64::from(input.u16()) << 12, u64::from(input.u8()) << 12))
                    .collect();
                let r = dev.report(&ranges, &mut emit);
                // Reports discard free memory, outside the balloon's books.
                emitted = 0;
                r.is_err()
            }
            11 => match input.u8() % 4 {
                0 => dev.driver_ok().is_err(),
                1 => dev
                    .negotiate(Features::from_bits_retain(
                        u64::from(input.u8()) | (1 << 32),
                    ))
                    .is_err(),
                2 => dev.negotiate(drv.features()).is_err(),
                _ => {
                    dev.reset();
                    model.clear();
                    discarded = 0;
                    // The guest starts over too.
                    drv = VirtioDriver::new(
                        offered,
                        GuestPoisoning {
                            poisons_free_pages: false,
                        },
                        0,
                        guest_pages,
                        12,
                        vec![
                            0u64;
                            hvmem_balloon_proto::virtio::driver::driver_storage_words(
                                guest_pages,
                                12
                            )
                        ],
                    )
                    .unwrap();
                    guest = Free((0..guest_pages).collect());
                    driver_owns_balloon = true;
                    false
                }
            },
            _ => {
                // The honest driver takes a step; the device must accept it
                // while it alone has been feeding the balloon.
                if !dev.is_running() || !driver_owns_balloon {
                    continue;
                }
                let step = if input.u8() % 4 == 0 {
                    drv.oom()
                } else {
                    drv.poll(&mut guest)
                };
                let (inflate, bytes) = match step {
                    Ok(DriverStep::Inflate(b)) => (true, b.to_vec()),
                    Ok(DriverStep::Deflate(b)) => (false, b.to_vec()),
                    _ => continue,
                };
                let r = if inflate {
                    dev.inflate(&bytes, &mut emit)
                } else {
                    dev.deflate(&bytes, &mut emit)
                };
                assert_eq!(r, Ok(()), "the device refused an honest driver");
                for c in bytes.chunks_exact(4) {
                    let p = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    if inflate {
                        model.insert(p);
                    } else {
                        model.remove(&p);
                    }
                }
                let actual = drv.ack(&mut guest).unwrap();
                dev.write_config(4, &actual.0.to_le_bytes()).unwrap();
                assert_eq!(u64::from(actual.0), dev.inflated_pages());
                let mut stats = Stats::default();
                stats.set(
                    hvmem_balloon_proto::virtio::stats::StatTag::MemFree,
                    guest.0.len() as u64 * 4096,
                );
                let mut out = [0u8; 160];
                let _ = drv.fill_stats(&stats, &mut out);
                false
            }
        };
        if refused {
            assert!(dev == before, "a refused event changed the device");
            assert_eq!(emitted, 0, "a refused event emitted actions");
        }
        discarded += emitted;
        assert_eq!(dev.inflated_pages(), model.len() as u64);
        // Host pages straddling the end of guest memory are never discarded,
        // so every discard is a whole host page.
        assert_eq!(discarded, (dev.discarded_host_pages() * per) as i64);
    }
}

fn xen(input: &mut Bytes<'_>) {
    let physmap = u64::from(input.u8() % 120) + 1;
    let populated = u64::from(input.u8()) % (physmap + 1);
    let static_max_kib = u64::from(input.u16());
    let kind = if input.u8() & 1 == 0 {
        GuestKind::Pv
    } else {
        GuestKind::Translated
    };
    let mut config = DriverConfig::linux(kind, physmap, populated, static_max_kib);
    config.max_retry_count = u32::from(input.u8() % 6);
    config.max_schedule_delay = u32::from(input.u8() % 40);
    let mut driver: XenDriver<Vec<u64>, 16> = XenDriver::new(config, vec![0; 2]).unwrap();
    let mut guest = Free((0..populated).collect());
    let mut host: HostMemory<4> = HostMemory::new(u64::from(input.u16() % 400) + populated);
    let me = DomId::new(1);
    host.create_domain(me, u64::from(input.u16() % 300))
        .unwrap();
    host.set_max_pages(me, host.maximum_reservation(me).unwrap().max(populated))
        .unwrap();
    assert_eq!(host.populate_physmap(me, populated, 0), Ok(populated));
    let mut policy: Toolstack<3, 4> = Toolstack::new(
        if input.u8() & 1 == 0 {
            Mode::Reactive
        } else {
            Mode::Predictive { horizon: 3 }
        },
        1,
    );
    let mut selfballoon = SelfBalloon::new(SelfBalloonConfig::linux()).unwrap();
    let mut pending: Option<(MemoryOp, u64)> = None;
    let mut issued: Option<u64> = None;

    let mut steps = 0;
    while !input.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let (dbefore, hbefore) = (driver.clone(), host.clone());
        let mut driver_refused = false;
        let mut host_refused = false;
        match input.u8() % 12 {
            0 => driver_refused = driver.set_target_kib(u64::from(input.u16())).is_err(),
            1 | 2 => match driver.poll(&mut guest) {
                Ok(Step::Hypercall(r)) => pending = Some((r.op, r.extents.len() as u64)),
                Ok(_) => {}
                Err(_) => driver_refused = true,
            },
            3 | 4 => {
                if let (Some((op, n)), None) = (pending, issued) {
                    let done = match op {
                        MemoryOp::PopulatePhysmap => host.populate_physmap(me, n, 0),
                        _ => host.decrease_reservation(me, n, 0),
                    };
                    issued = Some(done.unwrap());
                } else if let Some(rc) = issued.take() {
                    let _ = driver.complete(rc as i64, &mut guest).unwrap();
                    pending = None;
                }
            }
            5 => {
                // A lying hypervisor.
                let rc = input.u64() as i64;
                if driver.complete(rc, &mut guest).is_err() {
                    driver_refused = true;
                } else {
                    // Accepted: the lie was within the batch. Play along
                    // only if it was the truth; otherwise start over.
                    if issued != Some(rc.max(0) as u64) {
                        return;
                    }
                    (pending, issued) = (None, None);
                }
            }
            6 => {
                if pending.is_some() && issued.is_none() {
                    driver.abandon(&mut guest).unwrap();
                    pending = None;
                } else if pending.is_none() {
                    driver_refused = driver.abandon(&mut guest).is_err();
                }
            }
            7 => {
                let d = DomId::new(u16::from(input.u8() % 4));
                host_refused = match input.u8() % 4 {
                    0 => host.claim_pages(d, u64::from(input.u16() % 500)).is_err(),
                    1 => host
                        .admit(d, u64::from(input.u16()), u64::from(input.u8()))
                        .is_err(),
                    2 => host
                        .populate_physmap(d, input.u64(), u32::from(input.u8() % 12))
                        .is_err(),
                    _ => host
                        .decrease_reservation(d, input.u64(), u32::from(input.u8() % 12))
                        .is_err(),
                };
                if d == me {
                    // Foreign traffic on the guest's own domain breaks the
                    // driver/books agreement on purpose; stop comparing.
                    return;
                }
            }
            8 => {
                let d = DomId::new(u16::from(input.u8() % 4));
                let (a, b) = (u64::from(input.u8()), u64::from(input.u8()));
                let _ = policy.add_domain(DomainBounds {
                    domid: d,
                    dynamic_min: a,
                    dynamic_max: b,
                });
            }
            9 => {
                let _ = policy.observe(
                    DomId::new(u16::from(input.u8() % 4)),
                    u64::from(input.u16()),
                );
            }
            10 => {
                if let Ok(plan) = policy.rebalance(&host) {
                    let growth: u64 = plan
                        .iter()
                        .map(|(d, t)| t.saturating_sub(host.current_reservation(d).unwrap()))
                        .sum();
                    assert!(
                        growth <= host.unclaimed_free_pages(),
                        "plan asks for more than is free"
                    );
                }
            }
            _ => {
                let m = MemInfo {
                    committed: input.u64() >> (input.u8() % 64),
                    reserve: u64::from(input.u16()),
                    totalram: input.u64() >> (input.u8() % 64),
                    max_pfn: input.u64() >> (input.u8() % 64),
                    frontswap: u64::from(input.u16()),
                    balloon_current: input.u64() >> (input.u8() % 64),
                };
                let _ = selfballoon.tick(&m);
            }
        }
        if driver_refused {
            assert!(driver == dbefore, "a refused event changed the driver");
        }
        if host_refused {
            assert!(host == hbefore, "a refused op changed the books");
        }
        assert!(host.is_conserved(), "host memory not conserved");
        if pending.is_none() {
            assert_eq!(
                driver.current_pages(),
                host.current_reservation(me).unwrap()
            );
        }
        assert_eq!(
            guest.0.len() as u64
                + driver.ballooned_pages()
                + driver.in_flight().map_or(0, |b| b.len() as u64)
                - driver
                    .in_flight()
                    .map_or(0, |b| b.iter().filter(|g| driver.is_ballooned(**g)).count()
                        as u64),
            physmap,
            "a frame is lost or counted twice"
        );
    }
}

/// An aligned run of `2^order` pages all free in the guest, searched from
/// `from`.
fn free_run(guest: &Free, order: u32, from: u64) -> Option<FreeBlock> {
    let n = 1u64 << order;
    guest
        .0
        .range(from..)
        .copied()
        .find(|&g| g % n == 0 && (g..g + n).all(|p| guest.0.contains(&p)))
        .map(|g| FreeBlock {
            gfn: Gfn::new(g),
            order,
        })
}

/// Whether any page of `span` is in one of `sets` or one of `blocks`.
fn overlaps(span: &std::ops::Range<u64>, sets: &[&BTreeSet<u64>], blocks: &[FreeBlock]) -> bool {
    sets.iter()
        .any(|set| set.range(span.clone()).next().is_some())
        || blocks
            .iter()
            .any(|b| b.gfn.get() < span.end && span.start < b.gfn.get() + b.pages())
}

fn garbage_block(input: &mut Bytes<'_>, guest_pages: u64) -> FreeBlock {
    FreeBlock {
        gfn: Gfn::new(u64::from(input.u16()) % (guest_pages + 64)),
        order: u32::from(input.u8() % 24),
    }
}

/// The driver's free page hinting and reporting beside its balloon, against
/// a model: every 4 KiB page is exactly one of free in the guest, used by
/// the guest, in the balloon, hinted, or isolated in the report in flight.
fn free_blocks(input: &mut Bytes<'_>) {
    let guest_pages = u64::from(input.u16() % 1024) + 1;
    let hint_order = u32::from(input.u8() % 6);
    let report_order = u32::from(input.u8() % 6);
    let negotiated = Features::from_bits_truncate(u64::from(input.u8() & 0x3f))
        | Features::VERSION_1
        | Features::MUST_TELL_HOST;
    let mut drv = VirtioDriver::new(
        negotiated,
        GuestPoisoning {
            poisons_free_pages: false,
        },
        0,
        guest_pages,
        12,
        vec![0u64; hvmem_balloon_proto::virtio::driver::driver_storage_words(guest_pages, 12)],
    )
    .unwrap();
    let features = drv.features();
    let mut hinter = FreePageHinter::new(
        features,
        guest_pages,
        12,
        hint_order,
        vec![0u64; hinter_storage_words(guest_pages, hint_order)],
    )
    .unwrap();
    let mut reporter = FreePageReporter::new(
        features,
        guest_pages,
        12,
        report_order,
        vec![0u64; reporter_storage_words(guest_pages, report_order)],
    )
    .unwrap();
    let mut guest = Free((0..guest_pages).collect());
    let mut used: BTreeSet<u64> = BTreeSet::new();
    let mut hinted: BTreeSet<u64> = BTreeSet::new();
    let mut isolated: Vec<FreeBlock> = Vec::new();
    let mut reported: BTreeSet<u64> = BTreeSet::new();

    let mut steps = 0;
    while !input.is_empty() && steps < MAX_STEPS {
        steps += 1;
        let (hinter_before, reporter_before) = (hinter.clone(), reporter.clone());
        let refused = match input.u8() % 10 {
            0 => {
                let id = u32::from(input.u8() % 6);
                if let HintStep::Stop | HintStep::ReleaseAll = hinter.config_changed(id) {
                    let _ = hinter.finish();
                }
                if id == 1 {
                    let n = hinter.release(usize::MAX, &mut guest);
                    assert!(n == 0 || !hinted.is_empty());
                    hinted.clear();
                }
                false
            }
            1 | 2 => match free_run(&guest, hint_order, u64::from(input.u16()) % guest_pages) {
                Some(block) => match hinter.hint(block, &drv) {
                    Ok(range) => {
                        assert_eq!(range, block.range());
                        for p in block.gfn.get()..block.gfn.get() + block.pages() {
                            assert!(guest.0.remove(&p));
                            hinted.insert(p);
                        }
                        false
                    }
                    Err(_) => true,
                },
                None => {
                    let _ = hinter.finish();
                    false
                }
            },
            3 => {
                // An arbitrary block. The driver trusts the guest kernel on
                // which pages are free (it checks only its own balloon), so
                // only blocks that are free or garbage are offered.
                let block = garbage_block(input, guest_pages);
                let span = block.gfn.get()..block.gfn.get().saturating_add(block.pages());
                // Hinted pages stay eligible: the hinter must refuse them.
                if overlaps(&span, &[&used], &isolated) {
                    continue;
                }
                match hinter.hint(block, &drv) {
                    Ok(_) => {
                        assert_eq!(block.order, hint_order);
                        for p in span {
                            assert!(guest.0.remove(&p), "hinted a page not free");
                            hinted.insert(p);
                        }
                        false
                    }
                    Err(_) => true,
                }
            }
            4 => {
                let n = usize::from(input.u8() % 4);
                let before = guest.0.len();
                let released = hinter.release(n, &mut guest);
                assert!(released <= n);
                let back = (guest.0.len() - before) as u64;
                assert_eq!(back, released as u64 * (1 << hint_order));
                hinted.retain(|p| !guest.0.contains(p));
                false
            }
            5 | 6 => {
                // Offer the guest's free runs of the reporting order or
                // larger, honest ones first and perhaps one garbage block.
                let mut offer = Vec::new();
                let mut from = 0;
                let order = report_order + u32::from(input.u8() % 2);
                while let Some(b) = free_run(&guest, order, from) {
                    offer.push(b);
                    from = b.gfn.get() + b.pages();
                    if offer.len() == 40 {
                        break;
                    }
                }
                let garbage = input.u8() % 4 == 0;
                if garbage {
                    // Free or garbage, as for hinting: never pages the guest
                    // uses, hints or has isolated.
                    let block = garbage_block(input, guest_pages);
                    let span = block.gfn.get()..block.gfn.get().saturating_add(block.pages());
                    if !overlaps(&span, &[&used, &hinted], &isolated) {
                        offer.push(block);
                    }
                }
                match reporter.report(&offer, &drv) {
                    Ok(ReportStep::Send { blocks, ranges }) => {
                        assert_eq!(blocks.len(), ranges.len());
                        for b in blocks {
                            for p in b.gfn.get()..b.gfn.get() + b.pages() {
                                assert!(guest.0.remove(&p), "reported a page not free");
                            }
                            isolated.push(*b);
                        }
                        false
                    }
                    Ok(ReportStep::Nothing) => false,
                    Err(_) => {
                        assert!(
                            garbage
                                || offer.is_empty()
                                || !features.contains(Features::PAGE_REPORTING)
                                || reporter_before.in_flight(),
                            "an honest offer was refused"
                        );
                        true
                    }
                }
            }
            7 => match reporter.acked() {
                Ok(blocks) => {
                    assert_eq!(blocks, &isolated[..]);
                    for b in isolated.drain(..) {
                        for p in b.gfn.get()..b.gfn.get() + b.pages() {
                            guest.free_page(Gfn::new(p));
                            reported.insert(p);
                        }
                    }
                    false
                }
                Err(_) => true,
            },
            8 => {
                // The guest allocates a page, and tells the reporter.
                if let Some(gfn) = guest.alloc_page() {
                    used.insert(gfn.get());
                    reporter.allocated(gfn, 0).unwrap();
                    let g = gfn.get() >> report_order << report_order;
                    for p in g..g + (1 << report_order) {
                        reported.remove(&p);
                    }
                } else if let Some(p) = used.pop_first() {
                    guest.free_page(Gfn::new(p));
                }
                false
            }
            _ => {
                // The balloon takes or gives pages (the device acks at once).
                drv.config_changed(u32::from(input.u16()) % (guest_pages as u32 + 1));
                if let Ok(DriverStep::Inflate(_) | DriverStep::Deflate(_)) = drv.poll(&mut guest) {
                    let _ = drv.ack(&mut guest).unwrap();
                }
                false
            }
        };
        if refused {
            assert!(hinter == hinter_before, "a refused step changed the hinter");
            assert!(
                reporter == reporter_before,
                "a refused step changed the reporter"
            );
        }
        assert_eq!(hinter.hinted_pages(), hinted.len() as u64);
        let in_report: u64 = isolated.iter().map(FreeBlock::pages).sum();
        let ballooned = u64::from(drv.actual());
        assert_eq!(
            guest.0.len() as u64 + used.len() as u64 + hinted.len() as u64 + in_report + ballooned,
            guest_pages,
            "a page was lost or counted twice"
        );
        for &p in hinted.iter().take(8) {
            assert!(hinter.is_hinted(Gfn::new(p)));
        }
        // Reported pages are reported in the reporter (whole granules only).
        for &p in reported.iter().take(8) {
            assert!(reporter.is_reported(Gfn::new(p)));
        }
    }
}
