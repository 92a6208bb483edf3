//! A whole simulated host built from the hvmem crates: the proof that they
//! compose, the main job, and the harness that attacks them as a hostile
//! guest would.
//!
//! - [`host`]: a buddy heap (hvmem-buddy) and a frame table
//!   (hvmem-frametable) over the host's frames, PV page-table validation
//!   (hvmem-pagetable through the frame table's `pagetable` feature), the
//!   hypervisor's per-domain books with claims (hvmem-balloon-proto's
//!   `HostMemory`), the M2P and each domain's physmap. Frame contents are
//!   kept only where needed ([`memory`]).
//! - [`tmem`]: hvmem-tmem-pool over frames the host lends from its heap;
//!   [`grant`]: hvmem-grant's tables and maptracks per domain, with the
//!   frame table's `TableGrantFrames` for frame references.
//! - [`hypercall`]: `mmu_update`, `mmuext_op`, `memory_op`,
//!   `grant_table_op` and `tmem_op` with Xen's numbers and Xen's return
//!   values.
//! - [`invariants`]: conservation (tmem's frames included), owners,
//!   reference and type counts against the live page tables and grant
//!   mappings, physmaps; a cheap check every step and a full audit every N
//!   steps.
//! - [`guest`]: honest PV guests with seeded workloads, cleancache and
//!   frontswap over tmem, and the Xen balloon driver; [`splitio`]: a block
//!   backend and its frontends exchanging pages through grants;
//!   [`scenario`]: policies (static, toolstack ballooning, selfballooning,
//!   each ballooning policy with tmem) and the figures of a run;
//!   [`report`]: table, JSON, SVG.
//! - [`attack`]: the malicious guest, for the `host` fuzz target and
//!   `hvmem-sim attack`.
//!
//! # Example
//!
//! ```
//! use hvmem_sim::host::{Host, HostConfig, HostStorage};
//! use hvmem_sim::hypercall::{Hypercall, MemoryArg, Reservation};
//! use hvmem_types::DomId;
//!
//! let mut storage = HostStorage::new(HostConfig::with_mib(16));
//! let mut host = Host::boot(&mut storage)?;
//! let guest = DomId::new(1);
//! host.create_domain(guest, 1024, 512)?;
//!
//! // The guest balloons in four pages: XENMEM_populate_physmap (6).
//! let mut gfns = [600, 601, 602, 603];
//! let rc = host
//!     .hypercall(
//!         guest,
//!         Hypercall::MemoryOp {
//!             cmd: 6,
//!             arg: MemoryArg::Reservation(Reservation {
//!                 extents: Some(&mut gfns),
//!                 nr_extents: 4,
//!                 extent_order: 0,
//!                 mem_flags: 0,
//!                 domid: DomId::SELF,
//!             }),
//!         },
//!     )
//!     .rc;
//! assert_eq!(rc, 4); // extents done; gfns now holds their machine frames
//! assert_eq!(host.books().domain(guest).unwrap().tot_pages, 516);
//! host.audit()?; // every invariant, every frame
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod attack;
pub mod grant;
pub mod guest;
pub mod host;
pub mod hypercall;
pub mod invariants;
pub mod memory;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod splitio;
pub mod tmem;

#[cfg(test)]
mod tests;
