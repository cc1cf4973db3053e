//! The process's randomness, read from the OS once per engine and handed to the engine as a seed.

use crate::net::Seed;

/// 256 bits from the operating system's CSPRNG (getrandom(2) on Linux, ProcessPrng on Windows).
pub fn os_seed() -> std::io::Result<Seed> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(format!("reading OS randomness: {e}")))?;
    Ok(seed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_seeds_differ() {
        assert_ne!(super::os_seed().unwrap(), super::os_seed().unwrap());
    }
}
