//! The names tmem's callers use: clients, pools, objects, UUIDs, and the
//! settings of the host and of each client.

use core::fmt;

/// The largest number of pools one client may have (Xen's
/// `MAX_POOLS_PER_DOMAIN`).
pub const POOLS_PER_CLIENT: usize = 16;
/// The largest number of shared pools on the host (Xen's
/// `MAX_GLOBAL_SHARED_POOLS`).
pub const SHARED_POOLS: usize = 16;
/// The most UUIDs one client may be authorized for (Xen's
/// `MAX_GLOBAL_SHARED_POOLS` per client).
pub const AUTHORIZED_UUIDS: usize = 16;

/// A client: one per domain, handed out by
/// [`Tmem::create_client`](crate::Tmem::create_client). The handle is the
/// host's, never the guest's: a guest names only its own pools.
///
/// A `ClientId` is a slot number with no generation. After
/// [`Tmem::destroy_client`](crate::Tmem::destroy_client), the next
/// `create_client` may reuse the slot, and an old `ClientId` then names the
/// new domain's client. Drop every copy of a destroyed client's id (and
/// every [`TmemDevice`](crate::virtio::TmemDevice) built from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub(crate) u16);

impl ClientId {
    /// The client's slot number.
    #[must_use]
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A pool, as one client numbers its pools (0..16, Xen's `pool_id`). The same
/// shared pool may have different ids in different clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PoolId(pub u32);

/// An object id: 192 bits (`struct xen_tmem_oid`). cleancache uses the
/// filesystem's file key; frontswap the swap type and offset bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Oid(pub [u64; 3]);

/// A shared pool's 128-bit UUID (`uuid[0]` = `lo`, `uuid[1]` = `hi`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uuid {
    /// The low 64 bits (`uuid[0]`).
    pub lo: u64,
    /// The high 64 bits (`uuid[1]`).
    pub hi: u64,
}

impl Uuid {
    /// All ones: "no UUID". A shared pool asked for with it is made
    /// private, as Xen does.
    pub const NONE: Self = Self {
        lo: u64::MAX,
        hi: u64::MAX,
    };
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.hi, self.lo)
    }
}

/// A pool's kind, decoded from Xen's pool flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolKind {
    /// Persistent (never evicted) rather than ephemeral.
    pub persistent: bool,
    /// Shared between the clients that joined its UUID.
    pub shared: bool,
}

/// How the host treats one client (set by the toolstack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientConfig {
    /// Share of ephemeral memory relative to the other clients' weights. A
    /// client holding more than `weight / total weight` of all ephemeral
    /// pages loses its own pages first when it asks for memory or when the
    /// host reclaims. 0 exempts the client from the comparison (Xen).
    pub weight: u32,
    /// The most ephemeral pages the client may hold; a put at the cap
    /// evicts the client's own oldest ephemeral page first. `None`: no cap.
    pub ephemeral_cap: Option<u32>,
    /// The most persistent pages the client may hold (its share of the
    /// domain's memory: in Xen persistent pages count against `max_pages`).
    /// The default, `u32::MAX`, is no quota at all: set one for every
    /// client a guest can reach.
    pub persistent_quota: u32,
    /// New pools of this client compress their pages (Xen's
    /// `TMEM_CLIENT_COMPRESS`). Needs the `compression` feature; without it
    /// the flag is kept but pages are stored whole.
    pub compress: bool,
}

/// The default: weight 1, no ephemeral cap, compression off, and
/// `persistent_quota: u32::MAX`, which means **no persistent quota**.
///
/// Persistent pages are never evicted, so a client with this config can
/// fill the page store with them. [`hypercall::do_tmem_op`] creates a
/// missing client with this default. Create each domain's client yourself
/// with [`Tmem::create_client`] and a `persistent_quota` before its guest
/// can call tmem.
///
/// [`hypercall::do_tmem_op`]: crate::hypercall::do_tmem_op
/// [`Tmem::create_client`]: crate::Tmem::create_client
impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            weight: 1,
            ephemeral_cap: None,
            persistent_quota: u32::MAX,
            compress: false,
        }
    }
}

/// Host-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TmemConfig {
    /// Seeds the key hash. Choose it at random per host: object ids are the
    /// guest's, and a known seed lets a guest aim many keys at one bucket run.
    /// The [`Default`] seed is a public constant: replace it.
    pub hash_seed: u64,
    /// Check the client's authorized UUIDs before letting it join a shared
    /// pool (Xen's default). With `false` any client may join any UUID.
    pub check_shared_auth: bool,
    /// Deduplicate identical ephemeral pages across clients (needs content
    /// index memory, see [`TmemLayout::dedup`](crate::TmemLayout::dedup)).
    pub dedup: bool,
    /// Ephemeral pages a put may evict to find room before it fails (Xen:
    /// 10).
    pub evictions_per_put: u32,
}

/// The default: Xen's settings (shared-pool authorization checked, no
/// deduplication, 10 evictions per put) and a **fixed, public
/// `hash_seed`**. Anyone who reads this crate knows that seed, so set your
/// own, drawn at random when the host starts:
///
/// ```
/// # let random_u64_from_the_host = 0x243f_6a88_85a3_08d3_u64;
/// let config = hvmem_tmem_pool::TmemConfig {
///     hash_seed: random_u64_from_the_host,
///     ..hvmem_tmem_pool::TmemConfig::default()
/// };
/// # assert_ne!(config.hash_seed, hvmem_tmem_pool::TmemConfig::default().hash_seed);
/// ```
impl Default for TmemConfig {
    fn default() -> Self {
        Self {
            hash_seed: 0x5eed_7e3e_0000_0001,
            check_shared_auth: true,
            dedup: false,
            evictions_per_put: 10,
        }
    }
}

/// What a get found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use]
pub enum GetOutcome {
    /// The page was copied out (Xen returns 1).
    Hit,
    /// No such page: never put, flushed, taken by an exclusive get, or
    /// evicted (Xen returns 0).
    Miss,
    /// The pool holds no page at all (Xen returns `-EEMPTY`); a miss too.
    PoolEmpty,
}
