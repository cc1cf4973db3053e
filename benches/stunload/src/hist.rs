//! Fixed-size log-linear latency histogram (the HdrHistogram idea, cut down): exact below 128 ns, then 64
//! sub-buckets per power of two, so any recorded value is reported within 1/128 of its true value.
//! One allocation at construction, none per sample.

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Largest power of two tracked: values at or above 2^(MAX_EXP+1) ns (about 73 minutes) are clamped.
const MAX_EXP: u32 = 41;
const LINEAR: usize = 2 * SUB;
const LEN: usize = LINEAR + (MAX_EXP - SUB_BITS) as usize * SUB;

pub struct Histogram {
    counts: Box<[u64; LEN]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram { counts: Box::new([0; LEN]), total: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    fn index(v: u64) -> usize {
        let v = v.min((1u64 << (MAX_EXP + 1)) - 1);
        if v < LINEAR as u64 {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros();
        let shift = exp - SUB_BITS;
        let mantissa = (v >> shift) as usize; // in [SUB, 2*SUB)
        LINEAR + (exp - SUB_BITS - 1) as usize * SUB + (mantissa - SUB)
    }

    /// Midpoint of the bucket at `i`.
    fn value(i: usize) -> u64 {
        if i < LINEAR {
            return i as u64;
        }
        let k = i - LINEAR;
        let exp = (k / SUB) as u32 + SUB_BITS + 1;
        let mantissa = (k % SUB + SUB) as u64;
        let shift = exp - SUB_BITS;
        (mantissa << shift) + ((1u64 << shift) >> 1)
    }

    #[inline]
    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
        self.sum += u128::from(nanos);
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
    }

    pub fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.sum = 0;
        self.min = u64::MAX;
        self.max = 0;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Value at quantile `q` in [0, 1] (nearest rank), in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                // Never report outside what was actually seen.
                return Self::value(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / u128::from(self.total)) as u64
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_value_agree_within_resolution() {
        for v in (0..200_000u64).chain([1 << 30, (1 << 30) + 12345, 987_654_321_000]) {
            let got = Histogram::value(Histogram::index(v));
            let err = got.abs_diff(v) as f64;
            assert!(err <= (v as f64 / 128.0).max(0.0) + 0.5, "v={v} got={got}");
        }
    }

    #[test]
    fn index_is_monotonic_and_in_range() {
        let mut last = 0;
        for e in 0..64u32 {
            for v in [1u64 << e, (1u64 << e) | ((1u64 << e) - 1)] {
                let i = Histogram::index(v);
                assert!(i < LEN);
                assert!(i >= last);
                last = i;
            }
        }
        assert_eq!(Histogram::index(u64::MAX), LEN - 1);
    }

    #[test]
    fn quantiles_of_uniform_samples() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        let close = |q: f64, want: f64| {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q={q} got={got} want={want}");
        };
        close(0.5, 500_000.0);
        close(0.99, 990_000.0);
        close(0.999, 999_000.0);
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.mean(), 500_005);
    }

    #[test]
    fn merge_and_reset() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(100);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.quantile(0.5), 100);
        a.reset();
        assert_eq!(a.count(), 0);
        assert_eq!(a.quantile(0.99), 0);
    }
}
