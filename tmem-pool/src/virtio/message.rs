//! The wire format of virtio-tmem requests and responses (see the module
//! docs of [`virtio`](crate::virtio) for the table).

use crate::abi;
use crate::handle::{Oid, Uuid};

/// Bytes of a request header.
pub const HEADER_BYTES: usize = 64;
/// Bytes of a response.
pub const RESPONSE_BYTES: usize = 16;

/// A virtio-tmem command, numbered as Xen's `TMEM_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `TMEM_NEW_POOL` (1).
    NewPool,
    /// `TMEM_DESTROY_POOL` (2).
    DestroyPool,
    /// `TMEM_PUT_PAGE` (4): with a device-readable data buffer.
    Put,
    /// `TMEM_GET_PAGE` (5): with a device-writable data buffer.
    Get,
    /// `TMEM_FLUSH_PAGE` (6).
    FlushPage,
    /// `TMEM_FLUSH_OBJECT` (7).
    FlushObject,
}

impl Op {
    /// The wire value.
    #[must_use]
    pub const fn code(self) -> u32 {
        match self {
            Self::NewPool => abi::TMEM_NEW_POOL,
            Self::DestroyPool => abi::TMEM_DESTROY_POOL,
            Self::Put => abi::TMEM_PUT_PAGE,
            Self::Get => abi::TMEM_GET_PAGE,
            Self::FlushPage => abi::TMEM_FLUSH_PAGE,
            Self::FlushObject => abi::TMEM_FLUSH_OBJECT,
        }
    }

    /// The command with wire value `code`.
    #[must_use]
    pub const fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            abi::TMEM_NEW_POOL => Self::NewPool,
            abi::TMEM_DESTROY_POOL => Self::DestroyPool,
            abi::TMEM_PUT_PAGE => Self::Put,
            abi::TMEM_GET_PAGE => Self::Get,
            abi::TMEM_FLUSH_PAGE => Self::FlushPage,
            abi::TMEM_FLUSH_OBJECT => Self::FlushObject,
            _ => return None,
        })
    }
}

/// A request header, decoded (fields as on the wire, unchecked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RequestHeader {
    /// The command's wire value.
    pub op: u32,
    /// The pool.
    pub pool_id: u32,
    /// The object.
    pub oid: Oid,
    /// The page index.
    pub index: u32,
    /// Pool flags (new pool).
    pub flags: u32,
    /// Pool UUID (new pool).
    pub uuid: Uuid,
    /// The request id.
    pub tag: u64,
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = out.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl RequestHeader {
    /// Decodes a header.
    #[must_use]
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Self {
        Self {
            op: le_u32(bytes, 0),
            pool_id: le_u32(bytes, 4),
            oid: Oid([le_u64(bytes, 8), le_u64(bytes, 16), le_u64(bytes, 24)]),
            index: le_u32(bytes, 32),
            flags: le_u32(bytes, 36),
            uuid: Uuid {
                lo: le_u64(bytes, 40),
                hi: le_u64(bytes, 48),
            },
            tag: le_u64(bytes, 56),
        }
    }

    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        put(&mut out, 0, &self.op.to_le_bytes());
        put(&mut out, 4, &self.pool_id.to_le_bytes());
        for (i, word) in self.oid.0.iter().enumerate() {
            put(&mut out, 8 + 8 * i, &word.to_le_bytes());
        }
        put(&mut out, 32, &self.index.to_le_bytes());
        put(&mut out, 36, &self.flags.to_le_bytes());
        put(&mut out, 40, &self.uuid.lo.to_le_bytes());
        put(&mut out, 48, &self.uuid.hi.to_le_bytes());
        put(&mut out, 56, &self.tag.to_le_bytes());
        out
    }
}

/// A response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Response {
    /// The request's tag.
    pub tag: u64,
    /// Xen's return value for the command.
    pub status: i32,
}

impl Response {
    /// Decodes a response; `None` if the reserved bytes are not zero.
    #[must_use]
    pub fn decode(bytes: &[u8; RESPONSE_BYTES]) -> Option<Self> {
        (le_u32(bytes, 12) == 0).then(|| Self {
            tag: le_u64(bytes, 0),
            status: le_u32(bytes, 8) as i32,
        })
    }

    /// Encodes the response.
    #[must_use]
    pub fn encode(&self) -> [u8; RESPONSE_BYTES] {
        let mut out = [0u8; RESPONSE_BYTES];
        put(&mut out, 0, &self.tag.to_le_bytes());
        put(&mut out, 8, &self.status.to_le_bytes());
        out
    }
}
