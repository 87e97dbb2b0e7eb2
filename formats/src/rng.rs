//! The workspace's one random number generator: SplitMix64 (Steele, Lea,
//! Flood 2014; passes BigCrush), small and fast. The synthetic datasets, the
//! initial weights of a model and the training pipeline's augmentations all
//! draw from it, each seeded its own way (see the constructors), so every
//! stream is fixed by its seed alone.

/// A SplitMix64 generator.
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
    /// The generator whose state starts at `state`: the stream of the
    /// reference `splitmix64.c` seeded with it. Synthetic datasets and
    /// initial weights are drawn this way.
    pub fn from_state(state: u64) -> Rng {
        Rng { state }
    }

    /// The generator of `seed` with the seed mixed first, so that nearby
    /// seeds start far apart (the training pipeline's seeding).
    pub fn new(seed: u64) -> Rng {
        Rng::from_state(mix(seed))
    }

    /// A generator for one purpose, e.g. `derive(seed, &[epoch, index])`:
    /// each part is mixed in so that nearby tuples give unrelated streams.
    pub fn derive(seed: u64, parts: &[u64]) -> Rng {
        let mut state = mix(seed);
        for &part in parts {
            state = mix(state ^ mix(part.wrapping_add(GOLDEN_GAMMA)));
        }
        Rng::from_state(state)
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

    /// Uniform in `[0, 1)` with 24 random bits, each value exact in `f32`.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[low, high)` in `f32`.
    pub fn range_f32(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.uniform_f32()
    }

    /// Uniform integer in `[0, n)`; 0 when `n` is 0 (numpy would raise, the
    /// callers' "no room to move" case is better served by 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Integer in `[low, high]` by remainder: biased by at most
    /// `(high - low + 1) / 2^64`, nothing at the ranges the synthetic
    /// datasets draw (their images depend on exactly this draw).
    pub fn between(&mut self, low: u32, high: u32) -> u32 {
        low + (self.next_u64() % (high - low + 1) as u64) as u32
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Standard normal (Box-Muller; the second value of the pair is dropped).
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
    fn from_state_is_the_reference_splitmix64() {
        // The first outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut rng = Rng::from_state(1234567);
        let expected = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for e in expected {
            assert_eq!(rng.next_u64(), e);
        }
    }

    #[test]
    fn new_mixes_the_seed_derive_mixes_every_part() {
        assert_eq!(Rng::new(5).next_u64(), Rng::from_state(mix(5)).next_u64());
        assert_eq!(Rng::derive(5, &[]).next_u64(), Rng::new(5).next_u64());
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let b = Rng::derive(7, &[2, 1]).next_u64();
        let c = Rng::derive(8, &[1, 2]).next_u64();
        assert_ne!(a[0], b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn below_between_and_shuffle_stay_in_range() {
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            counts[rng.below(5) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            let v = rng.between(10, 14);
            counts[v as usize - 10] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(rng.between(7, 7), 7);
        let mut items: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..100).collect::<Vec<_>>());
        items.sort();
        assert_eq!(items, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn uniforms_stay_in_their_ranges() {
        let mut rng = Rng::from_state(9);
        for _ in 0..10_000 {
            let (a, b) = (rng.range(-2.0, 3.0), rng.range_f32(-2.0, 3.0));
            assert!((-2.0..3.0).contains(&a), "{a}");
            assert!((-2.0..3.0).contains(&b), "{b}");
        }
        let mean = (0..20_000).map(|_| rng.uniform_f32() as f64).sum::<f64>() / 20_000.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
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
