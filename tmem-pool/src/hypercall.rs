//! Xen's `tmem_op` hypercall over a [`Tmem`]: decode, dispatch, and return
//! what Xen's `do_tmem_op` returns.
//!
//! [`do_tmem_op`] checks a command in this order:
//!
//! 1. `CONTROL`, `AUTH` and `RESTORE_NEW` return `-EOPNOTSUPP` (they are
//!    sysctls in Xen now). Nothing else happens.
//! 2. The calling domain's client is looked up. If it has none, one is
//!    created with [`ClientConfig::default`], as Xen does, or `-ENOMEM` is
//!    returned if no client slot is free. This happens for every other
//!    command, unknown ones included.
//! 3. `NEW_POOL` and `DESTROY_POOL` run.
//! 4. Every other command needs a valid pool: a negative `pool_id`, or one
//!    the client does not have, returns `-ENODEV`.
//! 5. Only then is the command itself checked: the page commands run, and
//!    any other command returns `-ENOSYS`.
//!
//! | Command | Returns |
//! |---|---|
//! | `NEW_POOL` | the pool id, or `-EPERM` (bad flags, no slot) |
//! | `DESTROY_POOL` | 1, or 0 if no such pool |
//! | `PUT_PAGE` | 1, or `-ENOMEM` / `-ENOSPC` / `-EFAULT` |
//! | `GET_PAGE` | 1 hit, 0 miss, `-EEMPTY` for a pool with no pages, `-EFAULT` |
//! | `FLUSH_PAGE`, `FLUSH_OBJECT` | 1 |
//! | any other command with a bad pool id | `-ENODEV` |
//! | `CONTROL`, `AUTH`, `RESTORE_NEW` | `-EOPNOTSUPP` |
//! | anything else (`NEW_PAGE`, `READ`, `WRITE`, `XCHG`, unknown numbers) | `-ENOSYS` with a valid pool id, `-ENODEV` without |
//!
//! # Create clients yourself
//!
//! The default client has no persistent quota
//! ([`ClientConfig::default`] sets `persistent_quota` to `u32::MAX`) and no
//! ephemeral cap. Persistent pages are never evicted. So a guest whose
//! client [`do_tmem_op`] created can fill the whole page store, or every
//! page record, with persistent pages, and the other guests' puts then
//! fail. (Xen counted persistent pages against the domain's `max_pages`;
//! nothing here does that for you.)
//!
//! Call [`Tmem::create_client`] for each domain, with a `persistent_quota`,
//! before that domain can issue its first `tmem_op`. If you do not want
//! tmem to create clients at all, check [`Tmem::client_of`] before calling
//! [`do_tmem_op`] and refuse domains that have none.

use hvmem_types::DomId;

use crate::abi::{self, TmemOp};
use crate::error::TmemError;
use crate::handle::{ClientConfig, GetOutcome, PoolId};
use crate::store::{Page, PageStore};
use crate::{PAGE_BYTES, Tmem};

/// `ENOSYS`: a command Xen does not implement.
pub const ENOSYS: i32 = 38;

/// A guest frame could not be read or written (not the guest's, not RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault;

/// The calling guest's memory, as the hypervisor copies pages in and out
/// (`cmfn` is an MFN for PV guests, a GFN for translated guests).
pub trait GuestPages {
    /// Copies the guest's frame `cmfn` into `page`.
    ///
    /// # Errors
    ///
    /// [`GuestFault`] if the guest may not access that frame.
    fn read(&mut self, cmfn: u64, page: &mut Page) -> Result<(), GuestFault>;
    /// Copies `page` into the guest's frame `cmfn`.
    ///
    /// # Errors
    ///
    /// [`GuestFault`] if the guest may not write that frame.
    fn write(&mut self, cmfn: u64, page: &Page) -> Result<(), GuestFault>;
    /// Whether [`write`](Self::write) to `cmfn` would succeed. A get checks
    /// it before it takes a page out of a private ephemeral pool, so a bad
    /// destination never costs the guest its page.
    fn can_write(&self, cmfn: u64) -> bool;
}

fn neg(e: TmemError) -> i64 {
    -i64::from(e.errno())
}

/// Runs one `tmem_op` for domain `domid` and returns Xen's return value.
///
/// If `domid` has no client, this creates one with
/// [`ClientConfig::default`], which has no persistent quota: see
/// [Create clients yourself](crate::hypercall#create-clients-yourself).
/// The module docs list the order of the checks and what each command
/// returns.
pub fn do_tmem_op<S: PageStore>(
    tmem: &mut Tmem<'_, S>,
    domid: DomId,
    op: &TmemOp,
    guest: &mut impl GuestPages,
) -> i64 {
    match op.cmd {
        abi::TMEM_CONTROL | abi::TMEM_AUTH | abi::TMEM_RESTORE_NEW => {
            return -i64::from(abi::EOPNOTSUPP);
        }
        _ => {}
    }
    let client = match tmem.client_of(domid) {
        Some(c) => c,
        None => match tmem.create_client(domid, ClientConfig::default()) {
            Ok(c) => c,
            Err(_) => return -i64::from(abi::ENOMEM),
        },
    };
    match op.cmd {
        abi::TMEM_NEW_POOL => match tmem.new_pool(client, op.uuid(), op.pool_flags()) {
            Ok(id) => i64::from(id.0),
            Err(e) => neg(e),
        },
        abi::TMEM_DESTROY_POOL => match u32::try_from(op.pool_id) {
            Ok(id) => match tmem.destroy_pool(client, PoolId(id)) {
                Ok(_) => 1,
                Err(_) => 0,
            },
            Err(_) => 0,
        },
        cmd => {
            let Ok(id) = u32::try_from(op.pool_id) else {
                return -i64::from(abi::ENODEV);
            };
            let pool = PoolId(id);
            if tmem.pool_kind(client, pool).is_err() {
                return -i64::from(abi::ENODEV);
            }
            let oid = op.oid();
            match cmd {
                abi::TMEM_PUT_PAGE => {
                    let mut page = [0u8; PAGE_BYTES];
                    if guest.read(op.cmfn, &mut page).is_err() {
                        return -i64::from(abi::EFAULT);
                    }
                    match tmem.put_page(client, pool, oid, op.index, &page) {
                        Ok(()) => 1,
                        Err(e) => neg(e),
                    }
                }
                abi::TMEM_GET_PAGE => get(tmem, client, pool, op, guest),
                abi::TMEM_FLUSH_PAGE => match tmem.flush_page(client, pool, oid, op.index) {
                    Ok(_) => 1,
                    Err(e) => neg(e),
                },
                abi::TMEM_FLUSH_OBJECT => match tmem.flush_object(client, pool, oid) {
                    Ok(_) => 1,
                    Err(e) => neg(e),
                },
                _ => -i64::from(ENOSYS),
            }
        }
    }
}

/// A get checks the destination first: an exclusive get removes the page,
/// and a fault after that would lose it.
fn get<S: PageStore>(
    tmem: &mut Tmem<'_, S>,
    client: crate::ClientId,
    pool: PoolId,
    op: &TmemOp,
    guest: &mut impl GuestPages,
) -> i64 {
    if !guest.can_write(op.cmfn) {
        return -i64::from(abi::EFAULT);
    }
    let mut page = [0u8; PAGE_BYTES];
    match tmem.get_page(client, pool, op.oid(), op.index, &mut page) {
        Ok(GetOutcome::Hit) => match guest.write(op.cmfn, &page) {
            Ok(()) => 1,
            Err(GuestFault) => -i64::from(abi::EFAULT),
        },
        Ok(GetOutcome::Miss) => 0,
        Ok(GetOutcome::PoolEmpty) => -i64::from(abi::EEMPTY),
        Err(e) => neg(e),
    }
}
