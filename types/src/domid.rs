//! Domain identifiers, with the reserved values of the Xen ABI.

use core::fmt;

/// A domain identifier (Xen `domid_t`, 16 bits).
///
/// Ids below [`DomId::FIRST_RESERVED`] name real domains; the ids from there on
/// are the ABI's special values (`DOMID_SELF`, `DOMID_IO`, ...). A guest can pass
/// any 16-bit value, so code that looks a domain up must check
/// [`DomId::is_reserved`] first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct DomId(u16);

impl DomId {
    /// The first reserved id (`DOMID_FIRST_RESERVED`, 0x7FF0).
    pub const FIRST_RESERVED: Self = Self(0x7FF0);
    /// The calling domain (`DOMID_SELF`, 0x7FF0).
    pub const SELF: Self = Self(0x7FF0);
    /// The owner of MMIO frames (`DOMID_IO`, 0x7FF1).
    pub const IO: Self = Self(0x7FF1);
    /// The hypervisor itself (`DOMID_XEN`, 0x7FF2).
    pub const XEN: Self = Self(0x7FF2);
    /// The owner of copy-on-write shared frames (`DOMID_COW`, 0x7FF3).
    pub const COW: Self = Self(0x7FF3);
    /// No domain (`DOMID_INVALID`, 0x7FF4).
    pub const INVALID: Self = Self(0x7FF4);
    /// The idle domain (`DOMID_IDLE`, 0x7FFF).
    pub const IDLE: Self = Self(0x7FFF);
    /// The initial (control and hardware) domain.
    pub const DOM0: Self = Self(0);

    /// Wraps a raw domain id.
    #[inline]
    #[must_use]
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// The raw domain id.
    #[inline]
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether the id is one of the ABI's special values rather than a domain.
    #[inline]
    #[must_use]
    pub const fn is_reserved(self) -> bool {
        self.0 >= Self::FIRST_RESERVED.0
    }
}

impl fmt::Debug for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::SELF => f.write_str("DOMID_SELF"),
            Self::IO => f.write_str("DOMID_IO"),
            Self::XEN => f.write_str("DOMID_XEN"),
            Self::COW => f.write_str("DOMID_COW"),
            Self::INVALID => f.write_str("DOMID_INVALID"),
            Self::IDLE => f.write_str("DOMID_IDLE"),
            Self(raw) => write!(f, "d{raw}"),
        }
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_ids_match_the_xen_abi() {
        assert_eq!(DomId::SELF.get(), 32752);
        assert_eq!(DomId::IO.get(), 32753);
        assert_eq!(DomId::XEN.get(), 32754);
        assert_eq!(DomId::COW.get(), 32755);
        assert_eq!(DomId::INVALID.get(), 32756);
        assert_eq!(DomId::IDLE.get(), 32767);
    }

    #[test]
    fn ids_from_first_reserved_up_are_not_domains() {
        assert!(!DomId::new(0x7FEF).is_reserved());
        assert!(DomId::new(0x7FF0).is_reserved());
        assert!(DomId::new(u16::MAX).is_reserved());
        assert_eq!(std::format!("{}", DomId::new(3)), "d3");
    }
}
