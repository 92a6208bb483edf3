//! Unit tests of the virtio machines, each named after the rule it guards,
//! and the model-based property tests.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeSet;
use std::vec;
use std::vec::Vec;

use hvmem_types::Gfn;
use proptest::prelude::*;

use crate::GuestPages;
use crate::virtio::blocks::{BlockError, FreeBlock};
use crate::virtio::config::{ConfigAccessError, config_len};
use crate::virtio::device::{
    BalloonDevice, DeviceConfig, HintOutcome, HostAction, ReportError, RequestError,
    SetTargetError, host_page_storage_words, piece_storage_words,
};
use crate::virtio::driver::{BalloonDriver, DriverError, DriverStep, driver_storage_words};
use crate::virtio::features::{
    DEVICE_ID, Features, GuestPoisoning, NegotiationError, Queue, QueueLayout, driver_accepts,
};
use crate::virtio::hint::HintError;
use crate::virtio::hinter::{FreePageHinter, HintBlockError, HintStep, hinter_storage_words};
use crate::virtio::reporter::{
    FreePageReporter, REPORT_CAPACITY, ReportStep, ReporterError, reporter_storage_words,
};
use crate::virtio::stats::{StatTag, Stats, StatsError};

pub(crate) type Dev = BalloonDevice<Vec<u64>>;

pub(crate) fn device(offered: Features, guest_pages: u64, host_page_shift: u32) -> Dev {
    let config = DeviceConfig {
        offered,
        guest_pages,
        host_page_shift,
        require_must_tell_host: false,
        first_hint_id: 2,
        legacy_big_endian: false,
    };
    BalloonDevice::new(
        config,
        vec![0; piece_storage_words(guest_pages)],
        vec![0; host_page_storage_words(guest_pages, host_page_shift)],
    )
    .unwrap()
}

fn running(offered: Features, guest_pages: u64, host_page_shift: u32) -> Dev {
    let mut d = device(offered, guest_pages, host_page_shift);
    d.negotiate(offered).unwrap();
    d.driver_ok().unwrap();
    d
}

pub(crate) fn pfns(list: &[u32]) -> Vec<u8> {
    list.iter().flat_map(|p| p.to_le_bytes()).collect()
}

fn collect(d: &mut Dev, inflate: bool, list: &[u32]) -> Result<Vec<HostAction>, RequestError> {
    let mut out = Vec::new();
    let buffer = pfns(list);
    if inflate {
        d.inflate(&buffer, |a| out.push(a))
    } else {
        d.deflate(&buffer, |a| out.push(a))
    }
    .map(|()| out)
}

#[test]
fn feature_bits_and_device_id_match_the_spec() {
    assert_eq!(DEVICE_ID, 5);
    let bits = [
        (Features::MUST_TELL_HOST, 0),
        (Features::STATS_VQ, 1),
        (Features::DEFLATE_ON_OOM, 2),
        (Features::FREE_PAGE_HINT, 3),
        (Features::PAGE_POISON, 4),
        (Features::PAGE_REPORTING, 5),
        (Features::VERSION_1, 32),
        (Features::ACCESS_PLATFORM, 33),
    ];
    for (f, bit) in bits {
        assert_eq!(f.bits(), 1 << bit);
    }
}

#[test]
fn queues_are_numbered_compactly_from_the_negotiated_features() {
    let all =
        QueueLayout::new(Features::STATS_VQ | Features::FREE_PAGE_HINT | Features::PAGE_REPORTING);
    assert_eq!(
        Queue::ALL.map(|q| all.index(q)),
        [Some(0), Some(1), Some(2), Some(3), Some(4)]
    );
    let reporting_only = QueueLayout::new(Features::PAGE_REPORTING | Features::VERSION_1);
    assert_eq!(reporting_only.index(Queue::Reporting), Some(2));
    assert_eq!(reporting_only.index(Queue::Stats), None);
    assert_eq!(reporting_only.count(), 3);
    assert_eq!(reporting_only.queue(2), Some(Queue::Reporting));
    assert_eq!(reporting_only.queue(3), None);
    let hint_reporting = QueueLayout::new(Features::FREE_PAGE_HINT | Features::PAGE_REPORTING);
    assert_eq!(hint_reporting.index(Queue::FreePage), Some(2));
    assert_eq!(hint_reporting.index(Queue::Reporting), Some(3));
    assert_eq!(Queue::Reporting.spec_index(), 4);
}

#[test]
fn negotiation_refuses_unoffered_bits_and_a_declined_must_tell_host_when_required() {
    let offered = Features::MUST_TELL_HOST | Features::STATS_VQ;
    let mut d = device(offered, 64, 12);
    assert_eq!(
        d.driver_ok(),
        Err(crate::virtio::device::StatusError::FeaturesNotNegotiated)
    );
    assert_eq!(
        d.negotiate(Features::PAGE_POISON | Features::STATS_VQ),
        Err(NegotiationError::NotOffered {
            bits: Features::PAGE_POISON
        })
    );
    let mut strict = BalloonDevice::new(
        DeviceConfig {
            offered,
            guest_pages: 64,
            host_page_shift: 12,
            require_must_tell_host: true,
            first_hint_id: 2,
            legacy_big_endian: false,
        },
        vec![0; 1],
        vec![],
    )
    .unwrap();
    assert_eq!(
        strict.negotiate(Features::STATS_VQ),
        Err(NegotiationError::MustTellHostDeclined)
    );
    assert_eq!(d.negotiate(Features::STATS_VQ), Ok(Features::STATS_VQ));
    assert_eq!(
        d.negotiate(Features::STATS_VQ),
        Err(NegotiationError::AlreadyNegotiated)
    );
}

#[test]
fn a_linux_driver_filters_poison_reporting_and_access_platform() {
    let offered = Features::all();
    let plain = GuestPoisoning {
        poisons_free_pages: false,
    };
    let poisoning = GuestPoisoning {
        poisons_free_pages: true,
    };
    assert_eq!(
        driver_accepts(offered, plain),
        Features::all() - Features::PAGE_POISON - Features::ACCESS_PLATFORM
    );
    assert_eq!(
        driver_accepts(offered, poisoning),
        Features::all() - Features::ACCESS_PLATFORM
    );
    let no_poison = Features::PAGE_REPORTING | Features::VERSION_1;
    assert_eq!(driver_accepts(no_poison, poisoning), Features::VERSION_1);
    assert_eq!(driver_accepts(no_poison, plain), no_poison);
}

#[test]
fn config_space_is_little_endian_and_sized_by_the_offer() {
    assert_eq!(config_len(Features::empty()), 8);
    assert_eq!(config_len(Features::FREE_PAGE_HINT), 12);
    assert_eq!(
        config_len(Features::FREE_PAGE_HINT | Features::PAGE_POISON),
        16
    );
    let mut d = running(Features::FREE_PAGE_HINT, 0x2_0000, 12);
    let _ = d.set_num_pages(0x1_0203).unwrap();
    let mut out = [0u8; 12];
    d.read_config(0, &mut out).unwrap();
    assert_eq!(out[..4], [0x03, 0x02, 0x01, 0x00]);
    let mut past = [0u8; 4];
    assert_eq!(
        d.read_config(12, &mut past),
        Err(ConfigAccessError::OutOfRange)
    );
}

#[test]
fn the_driver_may_write_only_actual_and_poison_before_driver_ok() {
    let offered = Features::PAGE_POISON;
    let mut d = device(offered, 1024, 12);
    d.negotiate(offered).unwrap();
    d.write_config(0xC, &0xaaaa_aaaa_u32.to_le_bytes()).unwrap();
    d.driver_ok().unwrap();
    let before = d.clone();
    assert_eq!(
        d.write_config(0xC, &[0; 4]),
        Err(ConfigAccessError::PoisonAfterDriverOk)
    );
    assert_eq!(
        d.write_config(0, &[0; 4]),
        Err(ConfigAccessError::ReadOnly { offset: 0 })
    );
    assert_eq!(
        d.write_config(8, &[0; 4]),
        Err(ConfigAccessError::ReadOnly { offset: 8 })
    );
    assert_eq!(
        d.write_config(4, &[0; 2]),
        Err(ConfigAccessError::NotAWholeField)
    );
    assert_eq!(
        d.write_config(5, &[0; 4]),
        Err(ConfigAccessError::NotAWholeField)
    );
    assert_eq!(
        d.write_config(14, &[0; 4]),
        Err(ConfigAccessError::OutOfRange)
    );
    assert_eq!(
        d.write_config(4, &2000u32.to_le_bytes()),
        Err(ConfigAccessError::ActualTooLarge { actual: 2000 })
    );
    assert_eq!(d, before);
    d.write_config(4, &10u32.to_le_bytes()).unwrap();
    assert_eq!(d.actual(), 10);
}

#[test]
fn a_target_above_guest_memory_is_refused() {
    let mut d = running(Features::empty(), 1024, 12);
    assert_eq!(
        d.set_num_pages(1025),
        Err(SetTargetError::AboveGuestMemory {
            pages: 1025,
            guest_pages: 1024
        })
    );
    assert_eq!(d.num_pages(), 0);
}

#[test]
fn requests_before_driver_ok_are_refused() {
    let mut d = device(Features::empty(), 64, 12);
    assert_eq!(collect(&mut d, true, &[1]), Err(RequestError::NotRunning));
}

#[test]
fn double_inflate_unknown_deflate_out_of_range_and_repeats_are_refused_and_change_nothing() {
    let mut d = running(Features::empty(), 64, 12);
    assert_eq!(collect(&mut d, true, &[1, 2, 3]).unwrap().len(), 1);
    let before = d.clone();
    let cases: [(bool, &[u32], RequestError); 6] = [
        (true, &[4, 2], RequestError::AlreadyInflated { pfn: 2 }),
        (true, &[4, 5, 4], RequestError::Duplicate { pfn: 4 }),
        (true, &[4, 64], RequestError::PfnOutOfRange { pfn: 64 }),
        (false, &[1, 9], RequestError::NotInflated { pfn: 9 }),
        (false, &[1, 1], RequestError::Duplicate { pfn: 1 }),
        (
            false,
            &[u32::MAX],
            RequestError::PfnOutOfRange { pfn: u32::MAX },
        ),
    ];
    for (inflate, list, err) in cases {
        assert_eq!(collect(&mut d, inflate, list), Err(err));
        assert_eq!(d, before);
    }
    assert_eq!(
        d.inflate(&[0; 5], |_| {}),
        Err(RequestError::BadLength { len: 5 })
    );
    assert_eq!(
        d.inflate(&[0; 257 * 4], |_| {}),
        Err(RequestError::TooManyPfns { count: 257 })
    );
    assert_eq!(d, before);
}

#[test]
fn four_kib_host_pages_are_discarded_and_reclaimed_in_contiguous_runs() {
    let mut d = running(Features::empty(), 64, 12);
    assert_eq!(
        collect(&mut d, true, &[5, 6, 7, 20, 8]).unwrap(),
        [
            HostAction::Discard {
                first_pfn: 5,
                pages: 3
            },
            HostAction::Discard {
                first_pfn: 20,
                pages: 1
            },
            HostAction::Discard {
                first_pfn: 8,
                pages: 1
            },
        ]
    );
    assert_eq!(
        collect(&mut d, false, &[6, 7]).unwrap(),
        [HostAction::Reclaim {
            first_pfn: 6,
            pages: 2
        }]
    );
    assert_eq!(d.inflated_pages(), 3);
}

#[test]
fn a_host_page_is_discarded_only_when_every_piece_is_inflated_across_requests() {
    // 16 KiB host pages: 4 pieces each.
    let mut d = running(Features::empty(), 64, 14);
    assert_eq!(collect(&mut d, true, &[0, 1, 9]).unwrap(), []);
    assert_eq!(collect(&mut d, true, &[8, 2]).unwrap(), []);
    assert_eq!(
        collect(&mut d, true, &[3, 10, 11]).unwrap(),
        [
            HostAction::Discard {
                first_pfn: 0,
                pages: 4
            },
            HostAction::Discard {
                first_pfn: 8,
                pages: 4
            }
        ]
    );
    assert!(d.is_discarded(2) && !d.is_discarded(4));
    assert_eq!(d.discarded_host_pages(), 2);
    // The first piece deflated hands the host page back; later ones do not.
    assert_eq!(
        collect(&mut d, false, &[1]).unwrap(),
        [HostAction::Reclaim {
            first_pfn: 0,
            pages: 4
        }]
    );
    assert_eq!(collect(&mut d, false, &[2, 3]).unwrap(), []);
    assert_eq!(
        collect(&mut d, true, &[1, 2, 3]).unwrap(),
        [HostAction::Discard {
            first_pfn: 0,
            pages: 4
        }]
    );
}

#[test]
fn a_partial_host_page_at_the_end_of_guest_memory_is_never_discarded() {
    let mut d = running(Features::empty(), 6, 14);
    assert_eq!(collect(&mut d, true, &[4, 5]).unwrap(), []);
    assert_eq!(collect(&mut d, false, &[4, 5]).unwrap(), []);
}

#[test]
fn reset_gives_the_guest_back_all_its_memory() {
    let mut d = running(Features::STATS_VQ, 64, 12);
    let _ = collect(&mut d, true, &[1, 2]).unwrap();
    d.reset();
    assert_eq!(
        (d.inflated_pages(), d.is_running(), d.negotiated()),
        (0, false, Features::empty())
    );
}

fn stats_bytes(entries: &[(u16, u64)]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
        .collect()
}

#[test]
fn stats_entries_are_ten_bytes_unknown_tags_ignored_and_one_buffer_outstanding() {
    let mut d = running(Features::STATS_VQ | Features::VERSION_1, 64, 12);
    let stats = d
        .stats_buffer(&stats_bytes(&[(5, 4096), (99, 7), (6, 1024)]))
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stats.get(StatTag::MemTot),
            stats.get(StatTag::Avail),
            stats.get(StatTag::SwapIn)
        ),
        (Some(4096), Some(1024), None)
    );
    assert_eq!(
        d.stats_buffer(&stats_bytes(&[(5, 1)])),
        Err(StatsError::AlreadyHeld)
    );
    d.request_stats().unwrap();
    assert_eq!(d.request_stats(), Err(StatsError::NoneHeld));
    // A buffer of 6-byte entries (the spec erratum) is refused.
    assert_eq!(
        d.stats_buffer(&[0; 12]),
        Err(StatsError::BadLength { len: 12 })
    );
    assert_eq!(
        d.stats_buffer(&vec![0; 2570]),
        Err(StatsError::TooLarge { len: 2570 })
    );
    // A stale value never survives a new buffer.
    let stats = d.stats_buffer(&stats_bytes(&[(6, 2048)])).unwrap().unwrap();
    assert_eq!(stats.get(StatTag::MemTot), None);
    assert_eq!(StatTag::from_raw(15), Some(StatTag::DirectReclaim));
    assert_eq!(StatTag::from_raw(16), None);
}

#[test]
fn a_legacy_device_ignores_the_first_stats_buffer() {
    let mut d = running(Features::STATS_VQ, 64, 12);
    assert_eq!(d.stats_buffer(&stats_bytes(&[(5, 1)])), Ok(None));
    d.request_stats().unwrap();
    assert!(d.stats_buffer(&stats_bytes(&[(5, 1)])).unwrap().is_some());
    let mut off = running(Features::empty(), 64, 12);
    assert_eq!(off.stats_buffer(&[]), Err(StatsError::NotNegotiated));
}

#[test]
fn hinting_answers_each_id_once_then_stop_and_ignores_old_ids() {
    let mut d = running(Features::FREE_PAGE_HINT, 64, 12);
    let id = d.start_hinting().unwrap();
    assert_eq!((id, d.hint_cmd_id()), (2, 2));
    assert_eq!(d.start_hinting(), Err(HintError::RoundActive));
    assert_eq!(d.hint_pages(0, 4096), Ok(HintOutcome::Ignored));
    assert_eq!(
        d.hint_command(&7u32.to_le_bytes()),
        Err(HintError::OutOfSequence { got: 7, current: 2 })
    );
    assert_eq!(
        d.hint_command(&[2, 0]),
        Err(HintError::BadLength { len: 2 })
    );
    d.hint_command(&2u32.to_le_bytes()).unwrap();
    assert_eq!(
        d.hint_command(&2u32.to_le_bytes()),
        Err(HintError::OutOfSequence { got: 2, current: 2 })
    );
    assert_eq!(
        d.hint_pages(0x1000, 0x2000),
        Ok(HintOutcome::Hinted {
            first_pfn: 1,
            pages: 2
        })
    );
    assert_eq!(
        d.hint_pages(0x1001, 0x1000),
        Err(HintError::BadRange {
            addr: 0x1001,
            len: 0x1000
        })
    );
    // The device stops the round: later hints are ignored, the driver's STOP ends it.
    let _ = d.stop_hinting().unwrap();
    assert_eq!(d.hint_pages(0x1000, 0x1000), Ok(HintOutcome::Ignored));
    assert_eq!(d.start_hinting(), Err(HintError::RoundActive));
    d.hint_command(&0u32.to_le_bytes()).unwrap();
    assert_eq!(
        d.hint_command(&0u32.to_le_bytes()),
        Err(HintError::OutOfSequence { got: 0, current: 0 })
    );
    assert_eq!(d.start_hinting(), Ok(3));
}

#[test]
fn hinted_or_reported_pages_must_not_overlap_the_balloon() {
    let offered = Features::FREE_PAGE_HINT | Features::PAGE_REPORTING;
    let mut d = running(offered, 1024, 12);
    let _ = collect(&mut d, true, &[300]).unwrap();
    let _ = d.start_hinting().unwrap();
    d.hint_command(&2u32.to_le_bytes()).unwrap();
    assert_eq!(
        d.hint_pages(0, 1024 * 4096),
        Err(HintError::OverlapsBalloon { addr: 0 })
    );
    assert_eq!(
        d.report(&[(0, 1024 * 4096)], |_| {}),
        Err(ReportError::OverlapsBalloon { addr: 0 })
    );
}

#[test]
fn reports_discard_only_the_host_page_aligned_interior() {
    let mut d = running(Features::PAGE_REPORTING, 1024, 14);
    let mut out = Vec::new();
    d.report(&[(0x1000, 0x9000), (0x10000, 0x4000)], |a| out.push(a))
        .unwrap();
    assert_eq!(
        out,
        [
            HostAction::Discard {
                first_pfn: 4,
                pages: 4
            },
            HostAction::Discard {
                first_pfn: 16,
                pages: 4
            }
        ]
    );
    let before = d.clone();
    assert_eq!(
        d.report(&[(0x1000, 0x1000), (0, 0)], |_| panic!()),
        Err(ReportError::BadRange { addr: 0, len: 0 })
    );
    assert_eq!(d.report(&[], |_| panic!()), Err(ReportError::BadRangeCount));
    assert_eq!(
        d.report(&[(1023 * 4096, 8192)], |_| panic!()),
        Err(ReportError::BadRange {
            addr: 1023 * 4096,
            len: 8192
        })
    );
    assert_eq!(d, before);
}

#[test]
fn reports_are_not_discarded_when_the_guest_poisons_with_a_non_zero_value() {
    let offered = Features::PAGE_REPORTING | Features::PAGE_POISON;
    let mut d = device(offered, 1024, 12);
    d.negotiate(offered).unwrap();
    d.write_config(0xC, &0xaau32.to_le_bytes()).unwrap();
    d.driver_ok().unwrap();
    d.report(&[(0, 0x4000)], |_| panic!("discarded a poisoned page"))
        .unwrap();
}

/// The guest kernel's free pages, by first 4 KiB frame.
pub(crate) struct Free(pub(crate) BTreeSet<u64>);

impl GuestPages for Free {
    fn alloc_page(&mut self) -> Option<Gfn> {
        self.0.pop_first().map(Gfn::new)
    }
    fn free_page(&mut self, gfn: Gfn) {
        assert!(self.0.insert(gfn.get()), "{gfn} freed twice");
    }
}

type Drv = BalloonDriver<Vec<u64>>;

fn driver(offered: Features, guest_pages: u64, page_shift: u32) -> Drv {
    BalloonDriver::new(
        offered,
        GuestPoisoning {
            poisons_free_pages: false,
        },
        0,
        guest_pages,
        page_shift,
        vec![0; driver_storage_words(guest_pages, page_shift)],
    )
    .unwrap()
}

fn decode(buffer: &[u8]) -> Vec<u32> {
    buffer
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn a_driver_with_large_pages_rounds_the_target_up_and_sends_every_sub_pfn() {
    // 16 KiB guest pages.
    let mut drv = driver(Features::empty(), 64, 14);
    let mut guest = Free((0..64).step_by(4).collect());
    drv.config_changed(5);
    assert_eq!(drv.target(), 8);
    let DriverStep::Inflate(buffer) = drv.poll(&mut guest).unwrap() else {
        panic!()
    };
    assert_eq!(decode(buffer), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(drv.ack(&mut guest).unwrap().0, 8);
    assert_eq!(drv.poll(&mut guest), Ok(DriverStep::Idle));
}

#[test]
fn deflated_pages_go_back_to_the_guest_only_after_the_ack() {
    let mut drv = driver(Features::MUST_TELL_HOST, 64, 12);
    let mut guest = Free((0..64).collect());
    drv.config_changed(3);
    let _ = drv.poll(&mut guest).unwrap();
    let _ = drv.ack(&mut guest).unwrap();
    drv.config_changed(1);
    let DriverStep::Deflate(buffer) = drv.poll(&mut guest).unwrap() else {
        panic!()
    };
    assert_eq!(decode(buffer), [0, 1]);
    assert!(!guest.0.contains(&0));
    assert_eq!(drv.poll(&mut guest), Err(DriverError::RequestInFlight));
    assert_eq!(drv.ack(&mut guest).unwrap().0, 1);
    assert!(guest.0.contains(&0) && guest.0.contains(&1));
    assert_eq!(drv.ack(&mut guest), Err(DriverError::NoRequest));
}

#[test]
fn deflate_on_oom_needs_the_feature() {
    let mut drv = driver(Features::empty(), 64, 12);
    assert_eq!(drv.oom(), Err(DriverError::DeflateOnOomNotNegotiated));
    let mut drv = driver(Features::DEFLATE_ON_OOM, 1024, 12);
    let mut guest = Free((0..1024).collect());
    assert_eq!(drv.oom(), Err(DriverError::BalloonEmpty));
    drv.config_changed(600);
    while drv.actual() < 600 {
        let _ = drv.poll(&mut guest).unwrap();
        let _ = drv.ack(&mut guest).unwrap();
    }
    let DriverStep::Deflate(buffer) = drv.oom().unwrap() else {
        panic!()
    };
    assert_eq!(buffer.len(), 256 * 4);
    assert_eq!(drv.ack(&mut guest).unwrap().0, 344);
}

#[test]
fn the_driver_keeps_the_same_stats_tags_and_answers_each_hint_id_once() {
    let mut drv = driver(Features::STATS_VQ | Features::FREE_PAGE_HINT, 64, 12);
    let mut stats = Stats::default();
    stats.set(StatTag::MemFree, 1);
    let mut out = [0u8; 64];
    assert_eq!(drv.fill_stats(&stats, &mut out), Ok(10));
    let mut other = stats;
    other.set(StatTag::Caches, 2);
    assert!(drv.fill_stats(&other, &mut out).is_err());
    let mut hinter = hinter(Features::FREE_PAGE_HINT, 64, 2);
    assert_eq!(hinter.config_changed(9), HintStep::SendCommand(9));
    assert_eq!(hinter.config_changed(9), HintStep::Nothing);
    assert_eq!(hinter.config_changed(0), HintStep::Stop);
    assert_eq!(hinter.config_changed(1), HintStep::ReleaseAll);
}

type Hinter = FreePageHinter<Vec<u64>>;
type Reporter = FreePageReporter<Vec<u64>>;

fn hinter(negotiated: Features, guest_pages: u64, order: u32) -> Hinter {
    FreePageHinter::new(
        negotiated,
        guest_pages,
        12,
        order,
        vec![0; hinter_storage_words(guest_pages, order)],
    )
    .unwrap()
}

fn reporter(negotiated: Features, guest_pages: u64, order: u32) -> Reporter {
    FreePageReporter::new(
        negotiated,
        guest_pages,
        12,
        order,
        vec![0; reporter_storage_words(guest_pages, order)],
    )
    .unwrap()
}

fn block(gfn: u64, order: u32) -> FreeBlock {
    FreeBlock {
        gfn: Gfn::new(gfn),
        order,
    }
}

/// Takes a whole aligned block of `2^order` pages out of the guest.
fn take_block(guest: &mut Free, order: u32) -> Option<FreeBlock> {
    let n = 1u64 << order;
    let start = guest
        .0
        .iter()
        .copied()
        .find(|&g| g % n == 0 && (g..g + n).all(|p| guest.0.contains(&p)))?;
    for p in start..start + n {
        guest.0.remove(&p);
    }
    Some(block(start, order))
}

#[test]
fn a_hinting_round_answers_the_id_once_hints_blocks_and_ends_with_one_stop() {
    let f = Features::FREE_PAGE_HINT | Features::VERSION_1;
    let mut dev = running(f, 256, 12);
    let drv = driver(f, 256, 12);
    let mut hinter = hinter(f, 256, 4);
    let mut guest = Free((0..256).collect());
    // No round yet: nothing may be hinted.
    assert_eq!(hinter.hint(block(0, 4), &drv), Err(HintBlockError::NoRound));
    let id = dev.start_hinting().unwrap();
    let HintStep::SendCommand(sent) = hinter.config_changed(dev.hint_cmd_id()) else {
        panic!("a fresh id must be answered");
    };
    assert_eq!(sent, id);
    dev.hint_command(&sent.to_le_bytes()).unwrap();
    let mut hinted = 0;
    while let Some(b) = take_block(&mut guest, 4) {
        let (addr, len) = hinter.hint(b, &drv).unwrap();
        assert_eq!(
            dev.hint_pages(addr, len),
            Ok(HintOutcome::Hinted {
                first_pfn: addr >> 12,
                pages: 16
            })
        );
        hinted += 1;
    }
    assert_eq!(hinted, 16);
    assert_eq!(hinter.hinted_pages(), 256);
    let stop = hinter.finish().unwrap();
    dev.hint_command(&stop).unwrap();
    // One STOP per round: a second finish has nothing to send.
    assert_eq!(hinter.finish(), None);
    // The same id read again does not open another round.
    assert_eq!(hinter.config_changed(id), HintStep::Nothing);
    assert_eq!(hinter.hint(block(0, 4), &drv), Err(HintBlockError::NoRound));
}

#[test]
fn done_releases_every_hinted_page_exactly_once() {
    let f = Features::FREE_PAGE_HINT;
    let drv = driver(f, 256, 12);
    let mut hinter = hinter(f, 256, 4);
    let mut guest = Free((0..256).collect());
    let _ = hinter.config_changed(5);
    for _ in 0..6 {
        let b = take_block(&mut guest, 4).unwrap();
        hinter.hint(b, &drv).unwrap();
    }
    assert_eq!(guest.0.len(), 256 - 96);
    assert_eq!(hinter.config_changed(1), HintStep::ReleaseAll);
    // `Free` panics on a page freed twice.
    assert_eq!(hinter.release(usize::MAX, &mut guest), 6);
    assert_eq!(guest.0.len(), 256);
    assert_eq!(hinter.hinted_pages(), 0);
    assert_eq!(hinter.release(usize::MAX, &mut guest), 0);
}

#[test]
fn memory_pressure_takes_back_only_the_blocks_asked_for() {
    let f = Features::FREE_PAGE_HINT;
    let drv = driver(f, 256, 12);
    let mut hinter = hinter(f, 256, 4);
    let mut guest = Free((0..256).collect());
    let _ = hinter.config_changed(5);
    for _ in 0..4 {
        let b = take_block(&mut guest, 4).unwrap();
        hinter.hint(b, &drv).unwrap();
    }
    assert_eq!(hinter.release(1, &mut guest), 1);
    assert_eq!(hinter.hinted_pages(), 48);
    assert!(!hinter.is_hinted(Gfn::new(0)));
    assert!(hinter.is_hinted(Gfn::new(16)));
}

#[test]
fn a_hinted_block_is_refused_when_misaligned_past_memory_ballooned_or_hinted_twice() {
    let f = Features::FREE_PAGE_HINT | Features::MUST_TELL_HOST;
    let mut drv = driver(f, 256, 12);
    let mut guest = Free((0..256).collect());
    drv.config_changed(16);
    let _ = drv.poll(&mut guest).unwrap();
    let _ = drv.ack(&mut guest).unwrap();
    // The balloon holds pages 0..16 now.
    let mut hinter = hinter(f, 256, 4);
    let _ = hinter.config_changed(7);
    let refused = |e| Err(HintBlockError::Block(e));
    assert_eq!(
        hinter.hint(block(0, 4), &drv),
        refused(BlockError::InBalloon { block: block(0, 4) })
    );
    assert_eq!(
        hinter.hint(block(8, 4), &drv),
        refused(BlockError::Misaligned { block: block(8, 4) })
    );
    assert_eq!(
        hinter.hint(block(32, 5), &drv),
        refused(BlockError::Misaligned {
            block: block(32, 5)
        })
    );
    assert_eq!(
        hinter.hint(block(256, 4), &drv),
        refused(BlockError::OutOfRange {
            block: block(256, 4)
        })
    );
    hinter.hint(block(32, 4), &drv).unwrap();
    assert_eq!(
        hinter.hint(block(32, 4), &drv),
        refused(BlockError::AlreadyHeld {
            block: block(32, 4)
        })
    );
    assert_eq!(hinter.hinted_pages(), 16);
}

#[test]
fn hinting_without_the_feature_does_nothing() {
    let drv = driver(Features::empty(), 64, 12);
    let mut hinter = hinter(Features::empty(), 64, 2);
    assert_eq!(hinter.config_changed(9), HintStep::Nothing);
    assert_eq!(
        hinter.hint(block(0, 2), &drv),
        Err(HintBlockError::Block(BlockError::NotNegotiated))
    );
}

#[test]
fn a_report_takes_at_most_32_unreported_blocks_and_the_ack_marks_them_reported() {
    let f = Features::PAGE_REPORTING | Features::VERSION_1;
    let pages = 64 * 16;
    let mut dev = running(f, pages, 12);
    let drv = driver(f, pages, 12);
    let mut rep = reporter(f, pages, 4);
    let free: Vec<FreeBlock> = (0..64).map(|i| block(i * 16, 4)).collect();
    let ReportStep::Send { blocks, ranges } = rep.report(&free, &drv).unwrap() else {
        panic!("64 unreported blocks must give a report");
    };
    assert_eq!(blocks.len(), REPORT_CAPACITY);
    assert_eq!(ranges[1], (16 << 12, 16 << 12));
    let mut discarded = 0;
    dev.report(ranges, |a| {
        if let HostAction::Discard { pages, .. } = a {
            discarded += pages;
        }
    })
    .unwrap();
    assert_eq!(discarded, 32 * 16);
    // One report at a time.
    assert_eq!(rep.report(&free, &drv), Err(ReporterError::InFlight));
    assert_eq!(rep.acked().unwrap().len(), 32);
    assert_eq!(rep.reported_pages(), 32 * 16);
    // The next report skips what is reported already.
    let ReportStep::Send { blocks, .. } = rep.report(&free, &drv).unwrap() else {
        panic!()
    };
    assert_eq!(blocks[0], block(32 * 16, 4));
    assert_eq!(rep.acked().unwrap().len(), 32);
    assert_eq!(rep.report(&free, &drv), Ok(ReportStep::Nothing));
    assert_eq!(rep.acked(), Err(ReporterError::NothingInFlight));
}

#[test]
fn an_allocation_makes_its_reported_block_reportable_again() {
    let f = Features::PAGE_REPORTING;
    let drv = driver(f, 256, 12);
    let mut rep = reporter(f, 256, 4);
    let free = [block(0, 5), block(64, 4)];
    let ReportStep::Send { blocks, .. } = rep.report(&free, &drv).unwrap() else {
        panic!()
    };
    assert_eq!(blocks, &free[..]);
    let _ = rep.acked().unwrap();
    assert!(rep.is_reported(Gfn::new(31)));
    assert_eq!(rep.report(&free, &drv), Ok(ReportStep::Nothing));
    // One 4 KiB page of the order-5 block is allocated, then freed again:
    // its 16-page granule is unreported, the block is offered again.
    rep.allocated(Gfn::new(17), 0).unwrap();
    assert!(!rep.is_reported(Gfn::new(16)));
    assert!(rep.is_reported(Gfn::new(0)));
    let ReportStep::Send { blocks, .. } = rep.report(&free, &drv).unwrap() else {
        panic!()
    };
    assert_eq!(blocks, &[block(0, 5)][..]);
    assert_eq!(
        rep.allocated(Gfn::new(256), 0),
        Err(BlockError::OutOfRange {
            block: block(256, 0)
        })
    );
    assert_eq!(
        rep.allocated(Gfn::new(3), 1),
        Err(BlockError::Misaligned { block: block(3, 1) })
    );
}

#[test]
fn a_bad_offer_is_refused_and_nothing_is_taken() {
    let f = Features::PAGE_REPORTING | Features::MUST_TELL_HOST;
    let mut drv = driver(f, 256, 12);
    let mut guest = Free((0..256).collect());
    drv.config_changed(16);
    let _ = drv.poll(&mut guest).unwrap();
    let _ = drv.ack(&mut guest).unwrap();
    let mut rep = reporter(f, 256, 4);
    let cases = [
        (
            vec![block(64, 4), block(0, 4)],
            BlockError::InBalloon { block: block(0, 4) },
        ),
        (
            vec![block(64, 4), block(8, 3)],
            BlockError::Misaligned { block: block(8, 3) },
        ),
        (
            vec![block(64, 4), block(64, 5)],
            BlockError::AlreadyHeld {
                block: block(64, 5),
            },
        ),
        (
            vec![block(240, 4), block(256, 4)],
            BlockError::OutOfRange {
                block: block(256, 4),
            },
        ),
    ];
    for (offer, error) in cases {
        assert_eq!(rep.report(&offer, &drv), Err(ReporterError::Block(error)));
        assert!(!rep.in_flight());
    }
    let unnegotiated = driver(Features::empty(), 256, 12);
    let mut off = reporter(Features::empty(), 256, 4);
    assert_eq!(
        off.report(&[block(64, 4)], &unnegotiated),
        Err(ReporterError::Block(BlockError::NotNegotiated))
    );
}

#[test]
fn a_driver_and_a_device_reach_the_target_in_both_directions() {
    let offered = Features::MUST_TELL_HOST | Features::VERSION_1;
    // Smaller under miri, where every page is interpreted: one 2 MiB host
    // page (512 guest pages) is the least that still discards one.
    let pages: u32 = if cfg!(miri) { 512 } else { 4096 };
    let mut dev = running(offered, pages.into(), 21);
    let mut drv = driver(offered, pages.into(), 12);
    let mut guest = Free((0..u64::from(pages)).collect());
    for target in [pages * 3 / 4, 100, pages, 0] {
        let _ = dev.set_num_pages(target).unwrap();
        drv.config_changed(dev.num_pages());
        loop {
            match drv.poll(&mut guest).unwrap() {
                DriverStep::Inflate(b) => dev.inflate(b, |_| {}).unwrap(),
                DriverStep::Deflate(b) => dev.deflate(b, |_| {}).unwrap(),
                DriverStep::Idle => break,
                DriverStep::OutOfPuff => panic!("the guest ran out of pages"),
            }
            let actual = drv.ack(&mut guest).unwrap();
            dev.write_config(4, &actual.0.to_le_bytes()).unwrap();
        }
        assert_eq!(
            (u64::from(dev.actual()), dev.inflated_pages()),
            (u64::from(target), u64::from(target))
        );
        assert_eq!(dev.discarded_host_pages(), u64::from(target) / 512);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Inflate(Vec<u32>),
    Deflate(Vec<u32>),
    Garbage(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    let list = proptest::collection::vec(0..70u32, 0..12);
    prop_oneof![
        list.clone().prop_map(Op::Inflate),
        list.prop_map(Op::Deflate),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::Garbage),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: if cfg!(miri) { 4 } else { 256 },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Random inflate, deflate and garbage requests against a set of
    /// inflated PFNs, for 4 KiB, 16 KiB and 32 KiB host pages over 66 guest
    /// pages (a partial host page at the end). A request succeeds exactly
    /// when the model says (all in range, no repeat, all clear for inflate,
    /// all set for deflate), and a refused one changes nothing and emits
    /// nothing. After every step the device's bits equal the model, a host
    /// page is discarded exactly when all its pieces are inflated, and the
    /// emitted discards minus reclaims equal the discarded pages.
    #[test]
    fn device_matches_a_set_of_inflated_pages(shift in prop_oneof![Just(12u32), Just(14), Just(15)], ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 8 } else { 60 })) {
        let guest = 66u64;
        let mut d = running(Features::empty(), guest, shift);
        let per = 1u64 << (shift - 12);
        let mut model: BTreeSet<u64> = BTreeSet::new();
        let mut discarded: i64 = 0;
        for op in ops {
            let before = d.clone();
            let mut emitted: i64 = 0;
            let mut emit = |a: HostAction| match a {
                HostAction::Discard { pages, .. } => emitted += pages as i64,
                HostAction::Reclaim { pages, .. } => emitted -= pages as i64,
                HostAction::ConfigChanged => {}
            };
            let (result, expect) = match &op {
                Op::Inflate(l) | Op::Deflate(l) => {
                    let inflate = matches!(op, Op::Inflate(_));
                    let distinct = l.iter().collect::<BTreeSet<_>>().len() == l.len();
                    let ok = distinct && l.iter().all(|&p| u64::from(p) < guest && model.contains(&u64::from(p)) != inflate);
                    let buffer = pfns(l);
                    let r = if inflate { d.inflate(&buffer, &mut emit) } else { d.deflate(&buffer, &mut emit) };
                    if r.is_ok() {
                        for &p in l {
                            if inflate { model.insert(u64::from(p)); } else { model.remove(&u64::from(p)); }
                        }
                    }
                    (r, ok)
                }
                Op::Garbage(bytes) => {
                    let mut b = bytes.clone();
                    if b.len() % 4 == 0 {
                        b.push(0);
                    }
                    (d.inflate(&b, &mut emit), false)
                }
            };
            prop_assert_eq!(result.is_ok(), expect, "{:?} -> {:?}", op, result);
            if result.is_err() {
                prop_assert_eq!(&d, &before);
                prop_assert_eq!(emitted, 0);
            }
            discarded += emitted;
            prop_assert_eq!(d.inflated_pages(), model.len() as u64);
            let mut whole = 0;
            for hp in 0..guest / per {
                let all = (hp * per..(hp + 1) * per).all(|p| model.contains(&p));
                prop_assert_eq!(d.is_discarded(hp * per), all);
                whole += u64::from(all);
            }
            prop_assert_eq!(discarded, (whole * per) as i64);
        }
    }
}
