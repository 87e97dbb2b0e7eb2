//! The pipeline's random numbers: SplitMix64, small and fast, with a state
//! derived from `(seed, epoch, record index, ...)` so that every sample's
//! augmentation is fixed by the seed alone, whichever worker thread runs it
//! and in whatever order.

/// A SplitMix64 generator (Steele, Lea, Flood 2014; passes BigCrush).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a strong 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: mix(seed) }
    }

    /// A generator for one purpose, e.g. `derive(seed, &[epoch, index])`:
    /// each part is mixed in so that nearby tuples give unrelated streams.
    pub fn derive(seed: u64, parts: &[u64]) -> Rng {
        let mut state = mix(seed);
        for &part in parts {
            state = mix(state ^ mix(part.wrapping_add(GOLDEN_GAMMA)));
        }
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits (like `np.random.uniform`).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// Uniform integer in `[0, n)`; 0 when `n` is 0 (numpy would raise, the
    /// callers' "no room to move" case is better served by 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // in (0, 1], so ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang's method; shapes below 1 use
    /// the boost `Gamma(a) = Gamma(a + 1) * U^(1/a)`.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.uniform();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// Beta(a, b) as `X / (X + Y)` with `X ~ Gamma(a)`, `Y ~ Gamma(b)`.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        x / (x + y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_parts_same_stream_different_parts_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let b = Rng::derive(7, &[2, 1]).next_u64();
        let c = Rng::derive(8, &[1, 2]).next_u64();
        assert_ne!(a[0], b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn below_and_shuffle_stay_in_range() {
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            counts[rng.below(5) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        let mut items: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn beta_has_the_right_moments() {
        // Beta(1.5, 1.5): mean 1/2, variance ab / ((a+b)^2 (a+b+1)) = 1/16.
        let mut rng = Rng::new(11);
        let n = 20000;
        let draws: Vec<f64> = (0..n).map(|_| rng.beta(1.5, 1.5)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!((var - 0.0625).abs() < 0.004, "{var}");
        assert!(draws.iter().all(|&x| x > 0.0 && x < 1.0));
        // A shape below one takes the boost path: Gamma(0.5) has mean 0.5.
        let g = (0..n).map(|_| rng.gamma(0.5)).sum::<f64>() / n as f64;
        assert!((g - 0.5).abs() < 0.03, "{g}");
    }
}
