//! A seeded pseudo-random generator small enough to inline: Marsaglia's
//! xorshift64. Benches need reproducible workloads, not statistical quality.

/// Marsaglia's 64-bit xorshift generator (shifts 13, 7, 17).
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator seeded with `seed` (0, a fixed point of xorshift, is
    /// replaced by another constant).
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (multiply-shift; the bias is below `n / 2^64`).
    /// Returns 0 for `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `0..n` as an index.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift64;

    #[test]
    fn is_deterministic_and_not_stuck() {
        let mut a = XorShift64::new(7);
        let mut b = XorShift64::new(7);
        let first: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let second: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(first, second);
        assert!(first.windows(2).all(|w| w[0] != w[1]));
        assert_ne!(XorShift64::new(0).next_u64(), 0);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_permutes() {
        let mut rng = XorShift64::new(1);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        let mut items: Vec<u32> = (0..100).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }
}
