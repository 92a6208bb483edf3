//! The guest side of virtio-tmem: request headers out, responses checked.

use core::fmt;

use crate::abi;
use crate::handle::{Oid, PoolId, Uuid};
use crate::virtio::message::{Op, RESPONSE_BYTES, RequestHeader, Response};
use crate::{PAGE_BYTES, TmemError};

/// Which way the request's data buffer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataDirection {
    /// No data buffer.
    None,
    /// A 4096-byte device-readable buffer: the page to put.
    ToDevice,
    /// A 4096-byte device-writable buffer: where the got page goes.
    FromDevice,
}

/// A request to place on the virtqueue: the header buffer, then the data
/// buffer (if any), then a 16-byte device-writable response buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// The header bytes (device-readable).
    pub header: [u8; crate::virtio::HEADER_BYTES],
    /// The data buffer to attach.
    pub data: DataDirection,
    /// The request id.
    pub tag: u64,
}

/// What a completed request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// New pool: the pool's id.
    PoolCreated(PoolId),
    /// Destroy pool: whether the pool existed.
    PoolDestroyed(bool),
    /// Put: stored.
    Stored,
    /// Get: the data buffer holds the page.
    Hit,
    /// Get: no such page (or the pool is empty).
    Miss,
    /// Flush page or object: done.
    Flushed,
    /// The device refused: the negated status (an errno). A failed put means
    /// the old copy is gone too.
    Failed(i32),
}

/// A completed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Completion {
    /// The request id.
    pub tag: u64,
    /// The command.
    pub op: Op,
    /// What it did.
    pub outcome: Outcome,
}

/// Why the driver refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// As many requests are in flight as the driver tracks.
    QueueFull,
    /// The response buffer is not 16 bytes, or its reserved bytes are set.
    BadResponse,
    /// The response names no request in flight.
    UnknownTag {
        /// The tag.
        tag: u64,
    },
    /// The used length does not fit the response (a hit without the page).
    BadUsedLength {
        /// The length reported.
        used_len: u32,
    },
    /// The status is impossible for the command (e.g. a pool id over 15).
    BadStatus {
        /// The status.
        status: i32,
    },
    /// Invalid pool flags, checked before anything is sent.
    Flags(TmemError),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueueFull => f.write_str("too many requests in flight"),
            Self::BadResponse => f.write_str("malformed response"),
            Self::UnknownTag { tag } => write!(f, "response for unknown request {tag}"),
            Self::BadUsedLength { used_len } => write!(f, "impossible used length {used_len}"),
            Self::BadStatus { status } => write!(f, "impossible status {status}"),
            Self::Flags(e) => write!(f, "pool flags: {e}"),
        }
    }
}

impl core::error::Error for DriverError {}

/// The guest side of a virtio-tmem device, tracking up to `N` requests in
/// flight (the virtqueue's size, or less).
#[derive(Clone, Debug)]
pub struct TmemDriver<const N: usize = 64> {
    in_flight: [Option<(u64, Op)>; N],
    next_tag: u64,
}

impl<const N: usize> Default for TmemDriver<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TmemDriver<N> {
    /// A driver with nothing in flight.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            in_flight: [None; N],
            next_tag: 0,
        }
    }

    /// Requests in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().filter(|s| s.is_some()).count()
    }

    fn issue(&mut self, op: Op, mut header: RequestHeader) -> Result<Request, DriverError> {
        let slot = self
            .in_flight
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(DriverError::QueueFull)?;
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        *slot = Some((tag, op));
        header.op = op.code();
        header.tag = tag;
        Ok(Request {
            header: header.encode(),
            data: match op {
                Op::Put => DataDirection::ToDevice,
                Op::Get => DataDirection::FromDevice,
                _ => DataDirection::None,
            },
            tag,
        })
    }

    /// Asks for a pool (Xen pool flags; [`Uuid::NONE`] for a private one).
    ///
    /// # Errors
    ///
    /// [`DriverError::Flags`] for flags the device would refuse;
    /// [`DriverError::QueueFull`].
    pub fn new_pool(&mut self, uuid: Uuid, flags: u32) -> Result<Request, DriverError> {
        crate::decode_pool_flags(flags).map_err(DriverError::Flags)?;
        self.issue(
            Op::NewPool,
            RequestHeader {
                flags,
                uuid,
                ..RequestHeader::default()
            },
        )
    }

    /// Destroys a pool.
    ///
    /// # Errors
    ///
    /// [`DriverError::QueueFull`].
    pub fn destroy_pool(&mut self, pool: PoolId) -> Result<Request, DriverError> {
        self.issue(
            Op::DestroyPool,
            RequestHeader {
                pool_id: pool.0,
                ..RequestHeader::default()
            },
        )
    }

    fn page_op(
        &mut self,
        op: Op,
        pool: PoolId,
        oid: Oid,
        index: u32,
    ) -> Result<Request, DriverError> {
        self.issue(
            op,
            RequestHeader {
                pool_id: pool.0,
                oid,
                index,
                ..RequestHeader::default()
            },
        )
    }

    /// Puts a page: attach the page as a device-readable 4096-byte buffer.
    ///
    /// # Errors
    ///
    /// [`DriverError::QueueFull`].
    pub fn put(&mut self, pool: PoolId, oid: Oid, index: u32) -> Result<Request, DriverError> {
        self.page_op(Op::Put, pool, oid, index)
    }

    /// Gets a page: attach a device-writable 4096-byte buffer.
    ///
    /// # Errors
    ///
    /// [`DriverError::QueueFull`].
    pub fn get(&mut self, pool: PoolId, oid: Oid, index: u32) -> Result<Request, DriverError> {
        self.page_op(Op::Get, pool, oid, index)
    }

    /// Flushes a page.
    ///
    /// # Errors
    ///
    /// [`DriverError::QueueFull`].
    pub fn flush_page(
        &mut self,
        pool: PoolId,
        oid: Oid,
        index: u32,
    ) -> Result<Request, DriverError> {
        self.page_op(Op::FlushPage, pool, oid, index)
    }

    /// Flushes an object.
    ///
    /// # Errors
    ///
    /// [`DriverError::QueueFull`].
    pub fn flush_object(&mut self, pool: PoolId, oid: Oid) -> Result<Request, DriverError> {
        self.page_op(Op::FlushObject, pool, oid, 0)
    }

    /// Takes a used chain's response buffer and used length. The request
    /// leaves the in-flight set only when the response is well formed.
    ///
    /// # Errors
    ///
    /// [`DriverError::BadResponse`], [`DriverError::UnknownTag`],
    /// [`DriverError::BadUsedLength`], [`DriverError::BadStatus`]: nothing
    /// changes.
    pub fn complete(&mut self, response: &[u8], used_len: u32) -> Result<Completion, DriverError> {
        let bytes: &[u8; RESPONSE_BYTES] =
            response.try_into().map_err(|_| DriverError::BadResponse)?;
        let Response { tag, status } = Response::decode(bytes).ok_or(DriverError::BadResponse)?;
        let slot = self
            .in_flight
            .iter_mut()
            .find(|s| s.is_some_and(|(t, _)| t == tag))
            .ok_or(DriverError::UnknownTag { tag })?;
        let Some((_, op)) = *slot else {
            return Err(DriverError::UnknownTag { tag });
        };
        let base = RESPONSE_BYTES as u32;
        let bad_len = DriverError::BadUsedLength { used_len };
        let outcome = match (op, status) {
            (_, s) if s < 0 => {
                if used_len != base {
                    return Err(bad_len);
                }
                match s.checked_neg() {
                    _ if op == Op::Get && s == -abi::EEMPTY => Outcome::Miss,
                    Some(errno) => Outcome::Failed(errno),
                    None => return Err(DriverError::BadStatus { status }),
                }
            }
            (Op::Get, 1) if used_len == base + PAGE_BYTES as u32 => Outcome::Hit,
            (Op::Get, 1) => return Err(bad_len),
            (_, _) if used_len != base => return Err(bad_len),
            (Op::NewPool, id) if (id as usize) < crate::POOLS_PER_CLIENT => {
                Outcome::PoolCreated(PoolId(id as u32))
            }
            (Op::DestroyPool, 0 | 1) => Outcome::PoolDestroyed(status == 1),
            (Op::Put, 1) => Outcome::Stored,
            (Op::Get, 0) => Outcome::Miss,
            (Op::FlushPage | Op::FlushObject, 1) => Outcome::Flushed,
            _ => return Err(DriverError::BadStatus { status }),
        };
        *slot = None;
        Ok(Completion { tag, op, outcome })
    }
}
