//! The library's one source of randomness for protocol values: STUN transaction ids (RFC 8489 §6 wants them
//! "cryptographically random"), PCP mapping nonces (RFC 6887 §11.1), and anything later engines need.
//!
//! Engines take a [`Seed`] and never read the OS themselves (they stay deterministic under test); the I/O layer
//! reads a seed from the OS once per process. ChaCha20 keeps ids unpredictable to anyone who does not know
//! the seed, even after seeing many of them.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// 256 bits of seed: from the OS in the binaries, a fixed value in tests.
pub type Seed = [u8; 32];

/// A cryptographically secure generator (ChaCha20) seeded once.
#[derive(Clone, Debug)]
pub struct Rng(ChaCha20Rng);

impl Rng {
    pub fn from_seed(seed: Seed) -> Rng {
        Rng(ChaCha20Rng::from_seed(seed))
    }

    /// A fresh seed for another engine, so engines built from one OS seed never share a stream.
    pub fn fork(&mut self) -> Seed {
        self.bytes()
    }

    /// A 96-bit STUN transaction id (RFC 8489 §5).
    pub fn transaction_id(&mut self) -> [u8; 12] {
        self.bytes()
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.0.fill_bytes(&mut out);
        out
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (0 when `n` is 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n) - 1;
        loop {
            let v = self.0.next_u64();
            if v <= zone {
                return v % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = Rng::from_seed([1; 32]);
        let mut b = Rng::from_seed([1; 32]);
        let mut c = Rng::from_seed([2; 32]);
        let ida = a.transaction_id();
        assert_eq!(ida, b.transaction_id());
        assert_ne!(ida, c.transaction_id());
        assert_ne!(ida, a.transaction_id(), "consecutive ids differ");
    }

    #[test]
    fn forks_are_independent_streams() {
        let mut root = Rng::from_seed([7; 32]);
        let mut x = Rng::from_seed(root.fork());
        let mut y = Rng::from_seed(root.fork());
        assert_ne!(x.transaction_id(), y.transaction_id());
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::from_seed([3; 32]);
        assert_eq!(r.below(0), 0);
        for n in [1u64, 2, 3, 7, 1000, u64::MAX] {
            for _ in 0..200 {
                assert!(r.below(n) < n);
            }
        }
    }
}
