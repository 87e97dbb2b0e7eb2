//! The pipeline's random numbers: the workspace's SplitMix64, with a state
//! derived from `(seed, epoch, record index, ...)` (`Rng::derive`) so that
//! every sample's augmentation is fixed by the seed alone, whichever worker
//! thread runs it and in whatever order.

pub use pulsefocus_formats::rng::Rng;
