//! virtio-tmem: the tmem operations carried over a virtqueue, so that a KVM
//! (or any virtio) VMM can offer tmem to its guests (after Kukreja and
//! Singh, "Virtio based Transcendent Memory", ICCSIT 2010).
//!
//! Sans-I/O, like hvmem-balloon-proto's virtio code: the device side
//! ([`TmemDevice`]) takes the buffers of one descriptor chain and writes the
//! response; the guest side ([`TmemDriver`]) builds request headers, tracks
//! what is in flight, and checks each response. Neither touches a
//! virtqueue, guest memory or an interrupt; the VMM and the guest's virtio
//! core do that.
//!
//! # Message format
//!
//! One virtqueue (`requestq`). Each request is one descriptor chain of
//! two or three buffers, all fields little-endian:
//!
//! 1. **Request header**, 64 bytes, device-readable ([`RequestHeader`]):
//!
//!    | Offset | Size | Field |
//!    |---|---|---|
//!    | 0 | 4 | `op`: Xen's command numbers (1 new pool, 2 destroy pool, 4 put, 5 get, 6 flush page, 7 flush object) |
//!    | 4 | 4 | `pool_id` (must be 0 for new pool) |
//!    | 8 | 24 | `oid[3]` (object id; must be zero for new pool and destroy pool) |
//!    | 32 | 4 | `index` (page index; must be zero unless put, get or flush page) |
//!    | 36 | 4 | `flags`: Xen's pool flags for new pool, else must be zero |
//!    | 40 | 16 | `uuid` low, high 64 bits for new pool, else must be zero |
//!    | 56 | 8 | `tag`: the driver's request id, echoed in the response |
//!
//!    A field that must be zero and is not gets `-EINVAL`, and nothing
//!    changes.
//!
//! 2. **Data**, exactly 4096 bytes, only for put (device-readable: the page
//!    to store) and get (device-writable: the page read). No data buffer
//!    for the other commands.
//! 3. **Response**, 16 bytes, device-writable ([`Response`]): `tag` (8),
//!    `status` (4, signed): Xen's return value of the command (1 done, 0 a
//!    get miss or a destroy of no pool, the pool id for new pool, a negated
//!    errno on failure, `-EEMPTY` for a get from an empty pool), and 4
//!    reserved bytes, zero.
//!
//! The used length the device reports is 16, plus 4096 for a get hit.
//! A request the device cannot parse gets status `-EINVAL` (bad field or
//! data buffer) or `-ENOSYS` (unknown op) and changes nothing. A chain
//! whose header or response buffer has the wrong size cannot be answered:
//! the device returns [`ChainError`] and the VMM completes the chain with
//! used length 0.
//!
//! The device serves one client: the VMM binds each guest's device to the
//! guest's [`ClientId`](crate::ClientId), so a guest can name only its own
//! pools. There is no device configuration space and no feature bit yet;
//! virtio has no device id assigned for tmem, so the VMM picks one from its
//! vendor range.

mod device;
mod driver;
mod message;

pub use device::{ChainError, Data, Served, TmemDevice};
pub use driver::{Completion, DataDirection, DriverError, Outcome, Request, TmemDriver};
pub use message::{HEADER_BYTES, Op, RESPONSE_BYTES, RequestHeader, Response};
