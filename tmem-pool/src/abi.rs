//! Xen's tmem hypercall ABI: command numbers, pool flags, the 56-byte
//! `struct tmem_op`, and the errnos.
//!
//! Every value here comes from Xen's public header
//! `xen/include/public/tmem.h` at tag `RELEASE-4.12.0` (the last release
//! with tmem). The layout of [`TmemOp`] is pinned by compile-time
//! assertions.

use core::mem::{offset_of, size_of};

use static_assertions::const_assert_eq;

/// `__HYPERVISOR_tmem_op`.
pub const HYPERVISOR_TMEM_OP: u32 = 38;

/// `TMEM_CONTROL`: a sysctl now; refused with `-EOPNOTSUPP` here.
pub const TMEM_CONTROL: u32 = 0;
/// `TMEM_NEW_POOL`.
pub const TMEM_NEW_POOL: u32 = 1;
/// `TMEM_DESTROY_POOL`.
pub const TMEM_DESTROY_POOL: u32 = 2;
/// `TMEM_NEW_PAGE` (interface < 0x00040400 only; refused).
pub const TMEM_NEW_PAGE: u32 = 3;
/// `TMEM_PUT_PAGE`.
pub const TMEM_PUT_PAGE: u32 = 4;
/// `TMEM_GET_PAGE`.
pub const TMEM_GET_PAGE: u32 = 5;
/// `TMEM_FLUSH_PAGE`.
pub const TMEM_FLUSH_PAGE: u32 = 6;
/// `TMEM_FLUSH_OBJECT`.
pub const TMEM_FLUSH_OBJECT: u32 = 7;
/// `TMEM_READ` (legacy sub-page op; refused).
pub const TMEM_READ: u32 = 8;
/// `TMEM_WRITE` (legacy sub-page op; refused).
pub const TMEM_WRITE: u32 = 9;
/// `TMEM_XCHG` (legacy sub-page op; refused).
pub const TMEM_XCHG: u32 = 10;
/// `TMEM_AUTH` (privileged, a sysctl now; refused with `-EOPNOTSUPP`).
pub const TMEM_AUTH: u32 = 101;
/// `TMEM_RESTORE_NEW` (privileged, a sysctl now; refused with `-EOPNOTSUPP`).
pub const TMEM_RESTORE_NEW: u32 = 102;

/// `TMEM_SPEC_VERSION`: the only version a pool may ask for.
pub const TMEM_SPEC_VERSION: u32 = 1;

/// `TMEM_POOL_PERSIST`: persistent; absent means ephemeral.
pub const TMEM_POOL_PERSIST: u32 = 1;
/// `TMEM_POOL_SHARED`: shared between domains by UUID.
pub const TMEM_POOL_SHARED: u32 = 2;
/// `TMEM_POOL_PRECOMPRESSED`: always refused.
pub const TMEM_POOL_PRECOMPRESSED: u32 = 4;
/// `TMEM_POOL_PAGESIZE_SHIFT`.
pub const TMEM_POOL_PAGESIZE_SHIFT: u32 = 4;
/// `TMEM_POOL_PAGESIZE_MASK`: log2(page size) - 12.
pub const TMEM_POOL_PAGESIZE_MASK: u32 = 0xf;
/// `TMEM_POOL_VERSION_SHIFT`.
pub const TMEM_POOL_VERSION_SHIFT: u32 = 24;
/// `TMEM_POOL_VERSION_MASK`.
pub const TMEM_POOL_VERSION_MASK: u32 = 0xff;
/// `TMEM_POOL_RESERVED_BITS`: must be zero.
pub const TMEM_POOL_RESERVED_BITS: u32 = 0x00ff_ff00;

/// `TMEM_CLIENT_COMPRESS`: the client's pages are compressed.
pub const TMEM_CLIENT_COMPRESS: u32 = 1;
/// `TMEM_CLIENT_FROZEN`: the client is frozen for save/restore.
pub const TMEM_CLIENT_FROZEN: u32 = 2;

/// `EPERM`.
pub const EPERM: i32 = 1;
/// `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// `EFAULT`.
pub const EFAULT: i32 = 14;
/// `ENODEV`.
pub const ENODEV: i32 = 19;
/// `EINVAL`.
pub const EINVAL: i32 = 22;
/// `ENOSPC`.
pub const ENOSPC: i32 = 28;
/// `EOPNOTSUPP`.
pub const EOPNOTSUPP: i32 = 95;
/// tmem's `EFROZEN`, returned negated.
pub const EFROZEN: i32 = 1000;
/// tmem's `EEMPTY` (a get from a pool that holds no page), returned negated.
pub const EEMPTY: i32 = 1001;

/// The pool flags of a private ephemeral pool of 4 KiB pages.
pub const PRIVATE_EPHEMERAL: u32 = TMEM_SPEC_VERSION << TMEM_POOL_VERSION_SHIFT;
/// The pool flags of a private persistent pool of 4 KiB pages.
pub const PRIVATE_PERSISTENT: u32 = PRIVATE_EPHEMERAL | TMEM_POOL_PERSIST;
/// The pool flags of a shared ephemeral pool of 4 KiB pages.
pub const SHARED_EPHEMERAL: u32 = PRIVATE_EPHEMERAL | TMEM_POOL_SHARED;

/// `struct tmem_op` as the guest lays it out (56 bytes, 8-aligned). The
/// `u` union is flattened: `NEW_POOL` reads `uuid`, `flags` and `arg1`
/// (bytes 8..32); every other command reads `oid`, `index` and `cmfn`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct TmemOp {
    /// The command (`TMEM_*`).
    pub cmd: u32,
    /// The pool, for every command but `NEW_POOL`.
    pub pool_id: i32,
    /// `u.gen.oid` (or, for `NEW_POOL`, `uuid[0..2]` in words 0 and 1 and
    /// `flags | arg1 << 32` in word 2).
    pub words: [u64; 3],
    /// `u.gen.index`.
    pub index: u32,
    /// `u.gen.tmem_offset` (ignored).
    pub tmem_offset: u32,
    /// `u.gen.pfn_offset` (ignored).
    pub pfn_offset: u32,
    /// `u.gen.len` (ignored).
    pub len: u32,
    /// `u.gen.cmfn`: the guest frame to copy from or to.
    pub cmfn: u64,
}

const_assert_eq!(size_of::<TmemOp>(), 56);
const_assert_eq!(core::mem::align_of::<TmemOp>(), 8);
const_assert_eq!(offset_of!(TmemOp, pool_id), 4);
const_assert_eq!(offset_of!(TmemOp, words), 8);
const_assert_eq!(offset_of!(TmemOp, index), 32);
const_assert_eq!(offset_of!(TmemOp, tmem_offset), 36);
const_assert_eq!(offset_of!(TmemOp, pfn_offset), 40);
const_assert_eq!(offset_of!(TmemOp, len), 44);
const_assert_eq!(offset_of!(TmemOp, cmfn), 48);

/// Bytes of a `struct tmem_op`.
pub const TMEM_OP_SIZE: usize = 56;

impl TmemOp {
    /// Reads a `struct tmem_op` from the guest's bytes (little-endian, as on
    /// x86-64 and AArch64).
    #[must_use]
    pub fn from_bytes(bytes: &[u8; TMEM_OP_SIZE]) -> Self {
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(bytes.get(at..at + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes.get(at..at + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(b)
        };
        Self {
            cmd: u32_at(0),
            pool_id: u32_at(4) as i32,
            words: [u64_at(8), u64_at(16), u64_at(24)],
            index: u32_at(32),
            tmem_offset: u32_at(36),
            pfn_offset: u32_at(40),
            len: u32_at(44),
            cmfn: u64_at(48),
        }
    }

    /// Writes the structure as the guest lays it out.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; TMEM_OP_SIZE] {
        let mut out = [0u8; TMEM_OP_SIZE];
        let fields: [(usize, &[u8]); 10] = [
            (0, &self.cmd.to_le_bytes()),
            (4, &self.pool_id.to_le_bytes()),
            (8, &self.words[0].to_le_bytes()),
            (16, &self.words[1].to_le_bytes()),
            (24, &self.words[2].to_le_bytes()),
            (32, &self.index.to_le_bytes()),
            (36, &self.tmem_offset.to_le_bytes()),
            (40, &self.pfn_offset.to_le_bytes()),
            (44, &self.len.to_le_bytes()),
            (48, &self.cmfn.to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(dst) = out.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        out
    }

    /// A `NEW_POOL` command.
    #[must_use]
    pub fn new_pool(uuid: crate::Uuid, flags: u32) -> Self {
        Self {
            cmd: TMEM_NEW_POOL,
            words: [uuid.lo, uuid.hi, u64::from(flags)],
            ..Self::default()
        }
    }

    /// A command on a page or object of a pool.
    #[must_use]
    pub fn page(cmd: u32, pool_id: i32, oid: crate::Oid, index: u32, cmfn: u64) -> Self {
        Self {
            cmd,
            pool_id,
            words: oid.0,
            index,
            cmfn,
            ..Self::default()
        }
    }

    /// `u.creat.uuid` of a `NEW_POOL` command.
    #[must_use]
    pub fn uuid(&self) -> crate::Uuid {
        crate::Uuid {
            lo: self.words[0],
            hi: self.words[1],
        }
    }

    /// `u.creat.flags` of a `NEW_POOL` command.
    #[must_use]
    pub fn pool_flags(&self) -> u32 {
        self.words[2] as u32
    }

    /// `u.gen.oid`.
    #[must_use]
    pub fn oid(&self) -> crate::Oid {
        crate::Oid(self.words)
    }
}
