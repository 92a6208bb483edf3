//! What a guest-side balloon driver needs from the guest kernel.

use hvmem_types::Gfn;

/// The guest kernel's page allocator, as a balloon driver uses it. Pages
/// are named by the 4 KiB frame they start at; a guest with larger pages
/// returns frames aligned to its page size.
pub trait GuestPages {
    /// Takes one free page without trying hard (no OOM killing, no reserves,
    /// no retries); `None` when there is none to spare.
    fn alloc_page(&mut self) -> Option<Gfn>;
    /// Gives a page back to the guest.
    fn free_page(&mut self, gfn: Gfn);
}
