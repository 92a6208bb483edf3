//! The device side of virtio-tmem: one descriptor chain in, the response
//! written, the used length out.

use core::fmt;

use crate::abi;
use crate::handle::{ClientId, GetOutcome, PoolId};
use crate::hypercall::ENOSYS;
use crate::store::PageStore;
use crate::virtio::message::{HEADER_BYTES, Op, RESPONSE_BYTES, RequestHeader, Response};
use crate::{PAGE_BYTES, Tmem, Uuid};

/// The data buffer of a chain, as the VMM found it.
#[derive(Debug)]
pub enum Data<'a> {
    /// The chain has no data buffer.
    None,
    /// A device-readable data buffer.
    In(&'a [u8]),
    /// A device-writable data buffer.
    Out(&'a mut [u8]),
}

/// A chain that cannot be answered: the VMM completes it with used length
/// 0 (and may treat the device as needing reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// The request header is not 64 bytes.
    HeaderLength {
        /// Its length.
        len: usize,
    },
    /// The response buffer is not 16 bytes.
    ResponseLength {
        /// Its length.
        len: usize,
    },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeaderLength { len } => write!(f, "request header of {len} bytes, not 64"),
            Self::ResponseLength { len } => write!(f, "response buffer of {len} bytes, not 16"),
        }
    }
}

impl core::error::Error for ChainError {}

/// What the device did with a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Served {
    /// The response it wrote.
    pub response: Response,
    /// The used length to report: bytes written to device-writable buffers.
    pub used_len: u32,
}

/// The device side of one guest's virtio-tmem device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmemDevice {
    client: ClientId,
}

fn neg(errno: i32) -> i32 {
    -errno
}

impl TmemDevice {
    /// A device serving `client`'s requests.
    ///
    /// The device holds the [`ClientId`] only. When the guest's domain dies,
    /// drop the device together with
    /// [`Tmem::destroy_client`](crate::Tmem::destroy_client): client ids are
    /// reused without a generation, so a device kept after its client is
    /// destroyed serves whichever domain gets that client slot next.
    #[must_use]
    pub fn new(client: ClientId) -> Self {
        Self { client }
    }

    /// The client this device serves.
    #[must_use]
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// Serves one chain: `header` (device-readable), `data`, and `response`
    /// (device-writable, written on `Ok`).
    ///
    /// # Errors
    ///
    /// [`ChainError`] if the header or the response buffer has the wrong
    /// size; nothing is done then. Every other fault is reported in the
    /// response's status.
    pub fn serve<S: PageStore>(
        &mut self,
        tmem: &mut Tmem<'_, S>,
        header: &[u8],
        data: Data<'_>,
        response: &mut [u8],
    ) -> Result<Served, ChainError> {
        let header: &[u8; HEADER_BYTES] = header
            .try_into()
            .map_err(|_| ChainError::HeaderLength { len: header.len() })?;
        let len = response.len();
        let response: &mut [u8; RESPONSE_BYTES] = response
            .try_into()
            .map_err(|_| ChainError::ResponseLength { len })?;
        let request = RequestHeader::decode(header);
        let (status, wrote_page) = self.execute(tmem, &request, data);
        let reply = Response {
            tag: request.tag,
            status,
        };
        *response = reply.encode();
        Ok(Served {
            response: reply,
            used_len: (RESPONSE_BYTES + if wrote_page { PAGE_BYTES } else { 0 }) as u32,
        })
    }

    fn execute<S: PageStore>(
        &self,
        tmem: &mut Tmem<'_, S>,
        r: &RequestHeader,
        data: Data<'_>,
    ) -> (i32, bool) {
        let Some(op) = Op::from_code(r.op) else {
            return (neg(ENOSYS), false);
        };
        let invalid = (neg(abi::EINVAL), false);
        let no_pool_args = r.flags == 0 && r.uuid == Uuid::default();
        let pool = PoolId(r.pool_id);
        let client = self.client;
        match (op, data) {
            (Op::NewPool, Data::None) => {
                if r.pool_id != 0 || r.oid.0 != [0; 3] || r.index != 0 {
                    return invalid;
                }
                match tmem.new_pool(client, r.uuid, r.flags) {
                    Ok(id) => (id.0 as i32, false),
                    Err(e) => (neg(e.errno()), false),
                }
            }
            (Op::DestroyPool, Data::None) => {
                if !no_pool_args || r.oid.0 != [0; 3] || r.index != 0 {
                    return invalid;
                }
                (i32::from(tmem.destroy_pool(client, pool).is_ok()), false)
            }
            (Op::Put, Data::In(page)) if no_pool_args && page.len() == PAGE_BYTES => {
                match tmem.put_page(client, pool, r.oid, r.index, page) {
                    Ok(()) => (1, false),
                    Err(e) => (neg(e.errno()), false),
                }
            }
            (Op::Get, Data::Out(page)) if no_pool_args && page.len() == PAGE_BYTES => {
                match tmem.get_page(client, pool, r.oid, r.index, page) {
                    Ok(GetOutcome::Hit) => (1, true),
                    Ok(GetOutcome::Miss) => (0, false),
                    Ok(GetOutcome::PoolEmpty) => (neg(abi::EEMPTY), false),
                    Err(e) => (neg(e.errno()), false),
                }
            }
            (Op::FlushPage, Data::None) if no_pool_args => {
                match tmem.flush_page(client, pool, r.oid, r.index) {
                    Ok(_) => (1, false),
                    Err(e) => (neg(e.errno()), false),
                }
            }
            (Op::FlushObject, Data::None) if no_pool_args && r.index == 0 => {
                match tmem.flush_object(client, pool, r.oid) {
                    Ok(_) => (1, false),
                    Err(e) => (neg(e.errno()), false),
                }
            }
            _ => invalid,
        }
    }
}
