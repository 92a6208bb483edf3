//! tmem pools, Xen's `tmem_op` hypercall and the virtio-tmem transport
//! against a model.
//!
//! The bytes decode into operations from three clients on a 12-frame store:
//! pool creation with arbitrary flags and UUIDs, authorization, destroy,
//! put / get / flush page / flush object / flush all, host eviction, memory
//! limits, and raw virtio-tmem headers, raw `struct tmem_op`s and raw
//! driver responses. Each page operation goes through the direct API, the
//! virtio driver and device, or the hypercall, chosen by the input; all
//! three must agree with the model:
//!
//! - a persistent get returns exactly the last successful put until it is
//!   flushed, and a failed put leaves no copy;
//! - an ephemeral get returns the last put or misses (then never hits
//!   again without a new put), never another pool's or client's data;
//! - a refused request (bad pool, malformed header, bad guest frame)
//!   changes no counter;
//! - every client's and the host's `pages == puts - exclusive_gets -
//!   flushes - evictions`, and tmem holds exactly the frames the store lent.

use std::collections::HashMap;

use hvmem_tmem_pool::abi::{self, TmemOp};
use hvmem_tmem_pool::hypercall::{self, GuestFault, GuestPages};
use hvmem_tmem_pool::virtio::{
    Data, DataDirection, HEADER_BYTES, Op, RequestHeader, TmemDevice, TmemDriver,
};
use hvmem_tmem_pool::{
    ClientConfig, ClientId, GetOutcome, Oid, OwnedMemory, PAGE_BYTES, Page, PoolId, SliceStore,
    StoreMemory, Tmem, TmemConfig, TmemError, TmemLayout, Uuid,
};
use hvmem_types::DomId;

use crate::bytes::Bytes;

const CLIENTS: usize = 3;
const FRAMES: u32 = 12;
const UUIDS: [Uuid; 3] = [Uuid::NONE, Uuid { lo: 1, hi: 2 }, Uuid { lo: 3, hi: 4 }];

/// Which pool a model entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Ident {
    Private(u64),
    Shared(Uuid),
}

#[derive(Clone, Copy, Debug)]
struct PoolModel {
    ident: Ident,
    persistent: bool,
    private_ephemeral: bool,
}

type Key = (Ident, [u64; 3], u32);

#[derive(Default)]
struct Model {
    pools: [[Option<PoolModel>; 16]; CLIENTS],
    /// The value of the last put per page; persistent entries are exact,
    /// ephemeral ones the only value a get may return.
    pages: HashMap<Key, (u64, bool)>,
    next_ident: u64,
}

impl Model {
    fn pool(&self, client: usize, id: u32) -> Option<PoolModel> {
        *self.pools[client].get(id as usize)?
    }

    fn forget_pool(&mut self, ident: Ident) {
        self.pages.retain(|k, _| k.0 != ident);
    }
}

/// A page carrying `value` (compressible when `value` is even).
fn page_of(value: u64) -> Page {
    let mut p = [0u8; PAGE_BYTES];
    let mut x = value.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for (i, word) in p.chunks_exact_mut(8).enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = if value % 2 == 0 {
            (i as u64 / 8) ^ value
        } else {
            x
        };
        word.copy_from_slice(&w.to_le_bytes());
    }
    p[..8].copy_from_slice(&value.to_le_bytes());
    p
}

fn value_of(page: &Page) -> u64 {
    u64::from_le_bytes(page[..8].try_into().unwrap())
}

/// The guest's memory for the hypercall path: two frames.
struct Guest {
    frames: [Page; 2],
}

impl GuestPages for Guest {
    fn read(&mut self, cmfn: u64, page: &mut Page) -> Result<(), GuestFault> {
        page.copy_from_slice(self.frames.get(cmfn as usize).ok_or(GuestFault)?);
        Ok(())
    }
    fn write(&mut self, cmfn: u64, page: &Page) -> Result<(), GuestFault> {
        self.frames
            .get_mut(cmfn as usize)
            .ok_or(GuestFault)?
            .copy_from_slice(page);
        Ok(())
    }
    fn can_write(&self, cmfn: u64) -> bool {
        (cmfn as usize) < self.frames.len()
    }
}

struct World<'a> {
    tmem: Tmem<'a, SliceStore<'a>>,
    clients: [ClientId; CLIENTS],
    devices: [TmemDevice; CLIENTS],
    drivers: [TmemDriver<4>; CLIENTS],
    guest: Guest,
    model: Model,
    next_value: u64,
}

/// A page command, however it travels.
#[derive(Clone, Copy, Debug)]
struct PageCmd {
    op: Op,
    client: usize,
    pool: u32,
    oid: [u64; 3],
    index: u32,
}

/// What a command returned, in Xen's return-value convention, and the page
/// a get copied out.
struct Outcome {
    status: i64,
    page: Option<Page>,
}

fn status_of(r: Result<(), TmemError>) -> i64 {
    match r {
        Ok(()) => 1,
        Err(e) => -i64::from(e.errno()),
    }
}

impl World<'_> {
    fn check(&self) {
        let mut sum = 0;
        for (i, &c) in self.clients.iter().enumerate() {
            let s = self.tmem.client_stats(c).unwrap();
            assert_eq!(
                s.pages,
                s.puts - s.exclusive_gets - s.flushes - s.evictions,
                "client {i}"
            );
            sum += s.pages;
            let persistent = self
                .model
                .pages
                .iter()
                .filter(|(k, v)| {
                    v.1 && self.model.pools[i].iter().flatten().any(|p| p.ident == k.0)
                })
                .count() as u64;
            let held: u64 = (0..16)
                .filter(|&id| self.model.pool(i, id).is_some_and(|p| p.persistent))
                .map(|id| self.tmem.pool_stats(c, PoolId(id)).unwrap().pages)
                .sum();
            assert_eq!(held, persistent, "client {i}: persistent pages");
        }
        let s = self.tmem.stats();
        assert_eq!(s.pages, sum);
        assert_eq!(s.pages, s.puts - s.exclusive_gets - s.flushes - s.evictions);
        assert_eq!(
            self.tmem.frames_in_use(),
            u64::from(self.tmem.store().in_use())
        );
    }

    /// Runs a page command through the path `via` picks.
    fn send(&mut self, cmd: PageCmd, via: u8, value: u64) -> Outcome {
        let client = self.clients[cmd.client];
        let oid = Oid(cmd.oid);
        let pool = PoolId(cmd.pool);
        let data = page_of(value);
        match via % 3 {
            0 => {
                let t = &mut self.tmem;
                let mut out = [0u8; PAGE_BYTES];
                let status = match cmd.op {
                    Op::Put => status_of(t.put_page(client, pool, oid, cmd.index, &data)),
                    Op::Get => match t.get_page(client, pool, oid, cmd.index, &mut out) {
                        Ok(GetOutcome::Hit) => 1,
                        Ok(GetOutcome::Miss) => 0,
                        Ok(GetOutcome::PoolEmpty) => -i64::from(abi::EEMPTY),
                        Err(e) => -i64::from(e.errno()),
                    },
                    Op::FlushPage => {
                        status_of(t.flush_page(client, pool, oid, cmd.index).map(drop))
                    }
                    Op::FlushObject => status_of(t.flush_object(client, pool, oid).map(drop)),
                    Op::NewPool | Op::DestroyPool => unreachable!(),
                };
                Outcome {
                    status,
                    page: (status == 1 && cmd.op == Op::Get).then_some(out),
                }
            }
            1 => {
                let drv = &mut self.drivers[cmd.client];
                let req = match cmd.op {
                    Op::Put => drv.put(pool, oid, cmd.index),
                    Op::Get => drv.get(pool, oid, cmd.index),
                    Op::FlushPage => drv.flush_page(pool, oid, cmd.index),
                    Op::FlushObject => drv.flush_object(pool, oid),
                    Op::NewPool | Op::DestroyPool => unreachable!(),
                }
                .unwrap();
                let mut buf = data;
                let mut response = [0u8; 16];
                let d = match req.data {
                    DataDirection::None => Data::None,
                    DataDirection::ToDevice => Data::In(&buf),
                    DataDirection::FromDevice => Data::Out(&mut buf),
                };
                let served = self.devices[cmd.client]
                    .serve(&mut self.tmem, &req.header, d, &mut response)
                    .unwrap();
                let done = drv.complete(&response, served.used_len).unwrap();
                assert_eq!(done.tag, req.tag);
                let status = i64::from(served.response.status);
                Outcome {
                    status,
                    page: (status == 1 && cmd.op == Op::Get).then_some(buf),
                }
            }
            _ => {
                let code = cmd.op.code();
                let op = TmemOp::page(code, cmd.pool as i32, oid, cmd.index, 0);
                self.guest.frames = [data, [0; PAGE_BYTES]];
                let domid = DomId::new(cmd.client as u16 + 1);
                let status = hypercall::do_tmem_op(&mut self.tmem, domid, &op, &mut self.guest);
                Outcome {
                    status,
                    page: (status == 1 && cmd.op == Op::Get).then_some(self.guest.frames[0]),
                }
            }
        }
    }

    /// Checks a page command's outcome against the model and updates it.
    fn apply(&mut self, cmd: PageCmd, value: u64, out: &Outcome, before: hvmem_tmem_pool::Stats) {
        let Some(pool) = self.model.pool(cmd.client, cmd.pool) else {
            assert_eq!(out.status, -i64::from(abi::ENODEV), "{cmd:?} on no pool");
            assert_eq!(
                self.tmem.stats(),
                before,
                "a refused command changed counters"
            );
            return;
        };
        let key = (pool.ident, cmd.oid, cmd.index);
        match cmd.op {
            Op::Put => match out.status {
                1 => {
                    self.model.pages.insert(key, (value, pool.persistent));
                }
                s if s == -i64::from(abi::ENOMEM) || s == -i64::from(abi::ENOSPC) => {
                    self.model.pages.remove(&key);
                }
                s => panic!("put returned {s}"),
            },
            Op::Get => {
                let expected = self.model.pages.get(&key).copied();
                match (out.status, &out.page) {
                    (1, Some(page)) => {
                        let (v, _) =
                            expected.unwrap_or_else(|| panic!("{cmd:?}: hit with no page put"));
                        assert_eq!(value_of(page), v, "{cmd:?}: stale or foreign data");
                        assert_eq!(*page, page_of(v), "{cmd:?}: altered data");
                        if pool.private_ephemeral {
                            self.model.pages.remove(&key);
                        }
                    }
                    (s, None) if s == 0 || s == -i64::from(abi::EEMPTY) => {
                        assert!(
                            !pool.persistent || expected.is_none(),
                            "{cmd:?}: persistent page lost"
                        );
                        self.model.pages.remove(&key);
                    }
                    (s, _) => panic!("get returned {s}"),
                }
            }
            Op::FlushPage => {
                assert_eq!(out.status, 1);
                self.model.pages.remove(&key);
            }
            Op::FlushObject => {
                assert_eq!(out.status, 1);
                self.model
                    .pages
                    .retain(|k, _| !(k.0 == pool.ident && k.1 == cmd.oid));
            }
            Op::NewPool | Op::DestroyPool => unreachable!(),
        }
    }

    fn new_pool(&mut self, client: usize, uuid: Uuid, flags: u32) {
        let free = self.model.pools[client].iter().position(Option::is_none);
        let r = self.tmem.new_pool(self.clients[client], uuid, flags);
        let valid = hvmem_tmem_pool::decode_pool_flags(flags);
        match r {
            Ok(id) => {
                assert!(valid.is_ok());
                assert_eq!(Some(id.0 as usize), free, "not the lowest free pool id");
                let kind = self.tmem.pool_kind(self.clients[client], id).unwrap();
                let ident = if kind.shared {
                    assert!(valid.unwrap().shared && uuid != Uuid::NONE);
                    Ident::Shared(uuid)
                } else {
                    self.model.next_ident += 1;
                    Ident::Private(self.model.next_ident)
                };
                self.model.pools[client][id.0 as usize] = Some(PoolModel {
                    ident,
                    persistent: kind.persistent,
                    private_ephemeral: !kind.persistent && !kind.shared,
                });
            }
            Err(e) => {
                assert_eq!(e.errno(), abi::EPERM);
                assert!(valid.is_err() || free.is_none() || e == TmemError::TooManyPools);
            }
        }
    }

    fn destroy_pool(&mut self, client: usize, id: u32) {
        let r = self.tmem.destroy_pool(self.clients[client], PoolId(id));
        match self.model.pool(client, id) {
            None => assert_eq!(r, Err(TmemError::NoSuchPool)),
            Some(_) => {
                r.unwrap();
                self.leave_pool(client, id);
            }
        }
    }

    /// The client left its pool `id`; the pool's pages are forgotten when
    /// no client is left in it.
    fn leave_pool(&mut self, client: usize, id: u32) {
        let Some(pool) = self.model.pools[client][id as usize].take() else {
            return;
        };
        let still_shared = self
            .model
            .pools
            .iter()
            .flatten()
            .flatten()
            .any(|p| p.ident == pool.ident);
        if !still_shared {
            self.model.forget_pool(pool.ident);
        }
    }

    /// A raw virtio-tmem header from the input.
    fn raw_virtio(&mut self, input: &mut Bytes<'_>) {
        let client = usize::from(input.u8()) % CLIENTS;
        let mut header = [0u8; HEADER_BYTES];
        for b in &mut header {
            *b = input.u8();
        }
        // Mostly sane headers, so the device does real work.
        let shape = input.u8();
        if shape & 1 == 0 {
            header[0] = [4, 5, 6, 7][usize::from(shape >> 1) % 4];
            header[4..8].copy_from_slice(&u32::from(shape >> 3 & 3).to_le_bytes());
            header[36..56].fill(0);
            if shape & 0x20 == 0 {
                header[8..32].iter_mut().skip(1).for_each(|b| *b &= 0);
                header[8] &= 3;
                header[33..36].fill(0);
                header[32] &= 3;
            }
        }
        let r = RequestHeader::decode(&header);
        self.next_value += 1;
        let value = self.next_value;
        let mut buf = page_of(value);
        let mut short = [0u8; 8];
        let kind = input.u8() % 5;
        let data = match kind {
            0 => Data::None,
            1 => Data::In(&buf),
            2 => Data::Out(&mut buf),
            3 => Data::In(&short),
            _ => Data::Out(&mut short),
        };
        let before = self.tmem.stats();
        let mut response = [0u8; 16];
        let served = self.devices[client]
            .serve(&mut self.tmem, &header, data, &mut response)
            .unwrap();
        let status = i64::from(served.response.status);
        assert_eq!(served.response.tag, r.tag);
        let op = Op::from_code(r.op);
        let reserved_clear = r.flags == 0 && r.uuid == Uuid::default();
        let well_formed = match (op, kind) {
            (Some(Op::Put), 1) | (Some(Op::Get), 2) => reserved_clear,
            (Some(Op::FlushPage), 0) => reserved_clear,
            (Some(Op::FlushObject), 0) => reserved_clear && r.index == 0,
            _ => false,
        };
        if !well_formed {
            // Pool commands from raw headers are refused or done; either way
            // resynchronise nothing: only page commands are replayed raw.
            if !matches!(op, Some(Op::NewPool | Op::DestroyPool)) || status < 0 {
                assert!(status < 0, "malformed request accepted: {r:?}");
                assert_eq!(self.tmem.stats(), before);
            }
            if matches!(op, Some(Op::NewPool | Op::DestroyPool)) && status >= 0 {
                self.resync_pools(client, r.uuid);
            }
            return;
        }
        let cmd = PageCmd {
            op: op.unwrap(),
            client,
            pool: r.pool_id,
            oid: r.oid.0,
            index: r.index,
        };
        let page = (status == 1 && cmd.op == Op::Get).then_some(buf);
        assert_eq!(served.used_len, if page.is_some() { 16 + 4096 } else { 16 });
        self.apply(cmd, value, &Outcome { status, page }, before);
    }

    /// After a raw pool command that succeeded, re-learn the client's pools.
    fn resync_pools(&mut self, client: usize, uuid: Uuid) {
        for id in 0..16u32 {
            let real = self.tmem.pool_kind(self.clients[client], PoolId(id)).ok();
            let known = self.model.pool(client, id);
            match (real, known) {
                (Some(kind), None) => {
                    self.model.next_ident += 1;
                    let ident = if kind.shared {
                        Ident::Shared(uuid)
                    } else {
                        Ident::Private(self.model.next_ident)
                    };
                    self.model.pools[client][id as usize] = Some(PoolModel {
                        ident,
                        persistent: kind.persistent,
                        private_ephemeral: !kind.persistent && !kind.shared,
                    });
                }
                (None, Some(_)) => self.leave_pool(client, id),
                _ => {}
            }
        }
    }

    /// A raw `struct tmem_op` through the hypercall.
    fn raw_hypercall(&mut self, input: &mut Bytes<'_>) {
        let client = usize::from(input.u8()) % CLIENTS;
        let cmd = [
            abi::TMEM_PUT_PAGE,
            abi::TMEM_GET_PAGE,
            abi::TMEM_FLUSH_PAGE,
            abi::TMEM_FLUSH_OBJECT,
            0,
            3,
            8,
            101,
            102,
            11,
        ][usize::from(input.u8()) % 10];
        let pool_id = i32::from(input.u8() as i8);
        let oid = [u64::from(input.u8() % 3), 0, 0];
        let index = u32::from(input.u8() % 4);
        let cmfn = u64::from(input.u8() % 3);
        self.next_value += 1;
        let value = self.next_value;
        self.guest.frames = [page_of(value), page_of(value)];
        let op = TmemOp::page(cmd, pool_id, Oid(oid), index, cmfn);
        let before = self.tmem.stats();
        let status = hypercall::do_tmem_op(
            &mut self.tmem,
            DomId::new(client as u16 + 1),
            &op,
            &mut self.guest,
        );
        let Some(op) = Op::from_code(cmd).filter(|o| !matches!(o, Op::NewPool | Op::DestroyPool))
        else {
            assert!(
                status == -i64::from(hypercall::ENOSYS)
                    || status == -i64::from(abi::EOPNOTSUPP)
                    || status == -i64::from(abi::ENODEV)
            );
            assert_eq!(self.tmem.stats(), before);
            return;
        };
        let pool = u32::try_from(pool_id).unwrap_or(u32::MAX);
        if cmfn >= 2 && matches!(op, Op::Put | Op::Get) && self.model.pool(client, pool).is_some() {
            assert_eq!(status, -i64::from(abi::EFAULT));
            assert_eq!(self.tmem.stats(), before);
            return;
        }
        let page = (status == 1 && op == Op::Get).then(|| self.guest.frames[cmfn as usize]);
        let cmd = PageCmd {
            op,
            client,
            pool,
            oid,
            index,
        };
        self.apply(cmd, value, &Outcome { status, page }, before);
    }

    /// Random responses to a driver with requests in flight.
    fn raw_response(&mut self, input: &mut Bytes<'_>) {
        let mut drv = TmemDriver::<4>::new();
        let mut tags = Vec::new();
        for i in 0..u64::from(input.u8() % 4) {
            tags.push(
                drv.flush_page(PoolId(0), Oid::default(), i as u32)
                    .unwrap()
                    .tag,
            );
        }
        for _ in 0..4 {
            let mut response = [0u8; 16];
            for b in &mut response {
                *b = input.u8();
            }
            if input.u8() & 1 == 0 && !tags.is_empty() {
                response[..8]
                    .copy_from_slice(&tags[usize::from(input.u8()) % tags.len()].to_le_bytes());
                response[12..].fill(0);
            }
            let used = u32::from(input.u16());
            let in_flight = drv.in_flight();
            match drv.complete(&response, used) {
                Ok(done) => {
                    assert!(tags.contains(&done.tag));
                    assert_eq!(drv.in_flight(), in_flight - 1);
                }
                Err(_) => assert_eq!(drv.in_flight(), in_flight),
            }
        }
    }
}

/// Runs the operations `data` decodes to.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let setup = input.u8();
    let dedup = setup & 1 != 0;
    let compress = setup & 2 != 0;
    let check_shared_auth = setup & 4 != 0;
    let layout = TmemLayout {
        clients: CLIENTS,
        pools: 24,
        pages: 24,
        objects: 24,
        frames: FRAMES as usize,
        dedup,
    };
    let mut store = StoreMemory::new(FRAMES);
    let mut tables = OwnedMemory::new(&layout);
    let config = TmemConfig {
        dedup,
        check_shared_auth,
        ..TmemConfig::default()
    };
    let mut tmem = Tmem::new(config, store.store(), tables.borrow()).unwrap();
    let client_config = ClientConfig {
        persistent_quota: u32::from(setup >> 3 & 7) + 2,
        ephemeral_cap: (setup & 0x40 != 0).then_some(5),
        compress,
        weight: 1,
    };
    let clients: [ClientId; CLIENTS] = core::array::from_fn(|i| {
        let mut c = client_config;
        c.weight = i as u32;
        tmem.create_client(DomId::new(i as u16 + 1), c).unwrap()
    });
    let mut w = World {
        tmem,
        clients,
        devices: clients.map(TmemDevice::new),
        drivers: core::array::from_fn(|_| TmemDriver::new()),
        guest: Guest {
            frames: [[0; PAGE_BYTES]; 2],
        },
        model: Model::default(),
        next_value: 0,
    };
    for step in 0..256 {
        if input.is_empty() && step > 0 {
            break;
        }
        let client = usize::from(input.u8()) % CLIENTS;
        match input.u8() % 14 {
            0 => {
                let uuid = UUIDS[usize::from(input.u8()) % 3];
                let choice = input.u8();
                let flags = match choice % 4 {
                    0 => abi::PRIVATE_PERSISTENT,
                    1 => abi::PRIVATE_EPHEMERAL,
                    2 => abi::SHARED_EPHEMERAL,
                    _ => u32::from(input.u16()) << 16 | u32::from(input.u16()),
                };
                w.new_pool(client, uuid, flags);
            }
            1 => {
                let id = u32::from(input.u8() % 18);
                w.destroy_pool(client, id);
            }
            op @ 2..=6 => {
                let op = [Op::Put, Op::Put, Op::Get, Op::FlushPage, Op::FlushObject]
                    [usize::from(op - 2)];
                let pool = u32::from(input.u8() % 5);
                let oid = [u64::from(input.u8() % 3), 0, 0];
                let index = if op == Op::FlushObject {
                    0
                } else {
                    u32::from(input.u8() % 4)
                };
                let via = input.u8();
                w.next_value += 1;
                let value = w.next_value;
                let cmd = PageCmd {
                    op,
                    client,
                    pool,
                    oid,
                    index,
                };
                let before = w.tmem.stats();
                let out = w.send(cmd, via, value);
                w.apply(cmd, value, &out, before);
            }
            7 => {
                w.tmem.flush_all(w.clients[client]).unwrap();
                let idents: Vec<Ident> = w.model.pools[client]
                    .iter()
                    .flatten()
                    .map(|p| p.ident)
                    .collect();
                // Persistent and private pages go; shared ones the client put
                // may go too (ephemeral: the model forgets them on a miss).
                w.model.pages.retain(|k, v| {
                    !(idents.contains(&k.0) && (v.1 || matches!(k.0, Ident::Private(_))))
                });
            }
            8 => {
                let before = w.tmem.ephemeral_pages();
                let r = w.tmem.evict(u64::from(input.u8() % 4));
                assert_eq!(w.tmem.ephemeral_pages(), before - r.pages);
            }
            9 => w
                .tmem
                .store_mut()
                .set_limit(u32::from(input.u8()) % (FRAMES + 2)),
            10 => {
                let uuid = UUIDS[usize::from(input.u8()) % 3];
                let _ = w.tmem.authorize_shared(w.clients[client], uuid);
            }
            11 => w.raw_virtio(&mut input),
            12 => w.raw_hypercall(&mut input),
            _ => w.raw_response(&mut input),
        }
        w.check();
    }
    for c in w.clients {
        w.tmem.destroy_client(c).unwrap();
    }
    assert_eq!(w.tmem.store().in_use(), 0);
}
