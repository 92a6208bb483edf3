//! The x86-64 formats: IA-32e paging (4- and 5-level) and Intel EPT.
//!
//! Both use 4 KiB tables of 512 eight-byte entries, nine bits of the input
//! address per level, and a physical-address field bounded by MAXPHYADDR
//! (at most 52 bits). Level numbers here: 0 = PT (4 KiB pages), 1 = PD
//! (2 MiB), 2 = PDPT (1 GiB), 3 = PML4, 4 = PML5.

mod ept;
mod paging;

pub use ept::Ept;
pub use paging::{LINUX_PAT, X86Paging};

const LEVEL_NAMES: [&str; 5] = ["PT", "PD", "PDPT", "PML4", "PML5"];

fn level_name(level: u8) -> &'static str {
    LEVEL_NAMES.get(usize::from(level)).copied().unwrap_or("?")
}

/// The address field of an entry: bits `[max_phys_bits - 1 : 12]`.
const fn address_mask(max_phys_bits: u8) -> u64 {
    ((1u64 << max_phys_bits) - 1) & !0xfff
}

/// The bits `[51 : max_phys_bits]`, reserved in every entry.
const fn high_reserved(max_phys_bits: u8) -> u64 {
    ((1u64 << 52) - 1) & !((1u64 << max_phys_bits) - 1)
}

/// Checks a MAXPHYADDR value: 32..=52 bits.
const fn valid_phys_bits(bits: u8) -> bool {
    bits >= 32 && bits <= 52
}

/// The address bits of a leaf at `level` (`shift`: log2 of its size): the
/// address field above the leaf's size; below it are PAT (bit 12 of a large
/// leaf) and reserved bits.
#[inline]
fn leaf_address_mask(max_phys_bits: u8, shift: u32) -> u64 {
    let below_size = 1u64.checked_shl(shift).map_or(u64::MAX, |size| size - 1);
    address_mask(max_phys_bits) & !below_size
}
