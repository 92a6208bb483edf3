//! Who a frame belongs to.

use core::fmt;

use hvmem_types::DomId;

/// The owner of an allocated frame: one domain, or the host (the hypervisor's
/// own heap, what Xen gives to `DOMID_XEN`).
///
/// Give the hypervisor's own frames to [`Owner::Host`], never to
/// `Owner::Domain(DomId::XEN)`: that id is reserved, and
/// [`FrameTable::assign`](crate::FrameTable::assign) refuses it with
/// [`FrameError::ReservedDomain`](crate::FrameError::ReservedDomain).
///
/// A free frame has no owner; the frame table reports it as `None`. A frame is
/// never owned by two owners at once: the owner lives in the same atomic word
/// as the general reference count, so every ownership change and every owner
/// check is a single compare-and-swap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Owner {
    /// A guest (or the control domain). Reserved ids (`DOMID_SELF`,
    /// `DOMID_IO`, ...) are refused by [`FrameTable::assign`](crate::FrameTable::assign).
    Domain(DomId),
    /// The host itself.
    Host,
}

impl Owner {
    /// Whether the owner can hold frames: the host, or a non-reserved domain id.
    #[inline]
    #[must_use]
    pub const fn is_valid(self) -> bool {
        match self {
            Self::Domain(dom) => !dom.is_reserved(),
            Self::Host => true,
        }
    }
}

impl From<DomId> for Owner {
    #[inline]
    fn from(dom: DomId) -> Self {
        Self::Domain(dom)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(dom) => write!(f, "{dom}"),
            Self::Host => f.write_str("host"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reserved_domain_ids_cannot_own_frames() {
        assert!(Owner::Domain(DomId::new(7)).is_valid());
        assert!(Owner::Host.is_valid());
        assert!(!Owner::Domain(DomId::XEN).is_valid());
        assert!(!Owner::Domain(DomId::SELF).is_valid());
    }
}
