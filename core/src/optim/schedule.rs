//! Learning rate per step: PaddleDetection's LinearWarmup wrapped around
//! PiecewiseDecay. Steps count from 0, the first update.

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub base_lr: f32,
    /// Warm-up runs linearly from `base_lr * warmup_start_factor` at step 0
    /// towards `base_lr`, for `warmup_steps` steps (0 = no warm-up).
    pub warmup_steps: u64,
    pub warmup_start_factor: f32,
    /// Step `s` uses `values[k]` where `k` counts the boundaries `<= s`.
    pub boundaries: Vec<u64>,
    pub values: Vec<f32>,
}

impl Schedule {
    /// PiecewiseDecay with a single `gamma`, as PaddleDetection expands it:
    /// after boundary k the rate is `base_lr * gamma / 10^k` (0.1 gives
    /// [0.1, 0.01], 0.5 gives [0.5, 0.05]).
    pub fn piecewise(
        base_lr: f32,
        gamma: f32,
        boundaries: &[u64],
        warmup_steps: u64,
        warmup_start_factor: f32,
    ) -> Self {
        let mut values = vec![base_lr];
        for k in 0..boundaries.len() {
            values.push(base_lr * gamma / 10f32.powi(k as i32));
        }
        Schedule::piecewise_values(
            base_lr,
            boundaries,
            values,
            warmup_steps,
            warmup_start_factor,
        )
    }

    /// PiecewiseDecay with explicit `values`, one more than `boundaries`
    /// (the SSD configs). The warm-up still ends at `base_lr`, as
    /// PaddleDetection's LinearWarmup does whatever the decay's values.
    pub fn piecewise_values(
        base_lr: f32,
        boundaries: &[u64],
        values: Vec<f32>,
        warmup_steps: u64,
        warmup_start_factor: f32,
    ) -> Self {
        assert_eq!(
            values.len(),
            boundaries.len() + 1,
            "piecewise decay: one value more than boundaries"
        );
        Schedule {
            base_lr,
            warmup_steps,
            warmup_start_factor,
            boundaries: boundaries.to_vec(),
            values,
        }
    }

    /// The YOLOv3 VOC configs: 1e-3, warm-up from 0 over 1000 steps, x0.1 at
    /// 55000 and 62000.
    pub fn yolov3() -> Self {
        Schedule::piecewise(1e-3, 0.1, &[55000, 62000], 1000, 0.0)
    }

    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            let start = self.base_lr * self.warmup_start_factor;
            return start + (self.base_lr - start) * (step as f32 / self.warmup_steps as f32);
        }
        let passed = self.boundaries.iter().filter(|&&b| b <= step).count();
        self.values[passed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolov3_schedule_by_hand() {
        let s = Schedule::yolov3();
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-9 + 1e-6 * b.abs();
        assert_eq!(s.lr_at(0), 0.0);
        assert!(close(s.lr_at(1), 1e-6));
        assert!(close(s.lr_at(500), 5e-4));
        assert!(close(s.lr_at(999), 9.99e-4));
        assert!(close(s.lr_at(1000), 1e-3));
        assert!(close(s.lr_at(54999), 1e-3));
        assert!(close(s.lr_at(55000), 1e-4));
        assert!(close(s.lr_at(61999), 1e-4));
        assert!(close(s.lr_at(62000), 1e-5));
        assert!(close(s.lr_at(70000), 1e-5));
    }

    #[test]
    fn explicit_values_are_the_rates_between_boundaries() {
        // ssd_mobilenet_v1_voc.yml, no warm-up.
        let values = vec![1e-3, 5e-4, 2.5e-4, 1e-4, 1e-5];
        let s = Schedule::piecewise_values(0.01, &[10000, 15000, 20000, 25000], values, 0, 1.0);
        let at = [0, 9999, 10000, 14999, 15000, 20000, 24999, 25000, 99999];
        let want = [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 1e-4, 1e-4, 1e-5, 1e-5];
        for (step, lr) in at.into_iter().zip(want) {
            assert_eq!(s.lr_at(step), lr, "step {step}");
        }
        // A warm-up rises towards base_lr, not the first value.
        let s = Schedule::piecewise_values(0.01, &[100], vec![1e-3, 1e-4], 10, 0.0);
        assert!((s.lr_at(5) - 0.005).abs() < 1e-9);
        assert_eq!(s.lr_at(10), 1e-3);
    }

    #[test]
    fn warmup_with_start_factor_and_no_boundaries() {
        let s = Schedule::piecewise(0.3, 0.1, &[], 3, 1.0 / 3.0);
        let lrs: Vec<f32> = (0..5).map(|k| s.lr_at(k)).collect();
        let expected = [0.1, 0.1 + 0.2 / 3.0, 0.1 + 0.4 / 3.0, 0.3, 0.3];
        for (a, b) in lrs.iter().zip(expected) {
            assert!((a - b).abs() < 1e-7, "{lrs:?}");
        }
    }
}
