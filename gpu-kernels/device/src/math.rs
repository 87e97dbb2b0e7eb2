//! The few float functions the kernels need (`floor64`/`ceil64`: f64, exact
//! on both builds, for rules defined in double). `core` has no `exp`/`ln`/`sqrt`
//! on nvptx64, so the device build uses the PTX instructions directly (the
//! same ones CUDA's fast-math `__expf`/`__logf` use); the host build uses std.

#[cfg(target_arch = "nvptx64")]
mod imp {
    use core::arch::asm;
    const LOG2_E: f32 = core::f32::consts::LOG2_E;
    const LN_2: f32 = core::f32::consts::LN_2;

    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        let y: f32;
        unsafe { asm!("ex2.approx.ftz.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) x * LOG2_E) };
        y
    }
    #[inline(always)]
    pub fn ln(x: f32) -> f32 {
        let y: f32;
        unsafe { asm!("lg2.approx.ftz.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) x) };
        y * LN_2
    }
    #[inline(always)]
    pub fn sqrt(x: f32) -> f32 {
        let y: f32;
        unsafe { asm!("sqrt.rn.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) x) };
        y
    }
    #[inline(always)]
    pub fn floor(x: f32) -> f32 {
        let y: f32;
        unsafe { asm!("cvt.rmi.f32.f32 {y}, {x};", y = out(reg32) y, x = in(reg32) x) };
        y
    }
    #[inline(always)]
    pub fn floor64(x: f64) -> f64 {
        let y: f64;
        unsafe { asm!("cvt.rmi.f64.f64 {y}, {x};", y = out(reg64) y, x = in(reg64) x) };
        y
    }
    #[inline(always)]
    pub fn ceil64(x: f64) -> f64 {
        let y: f64;
        unsafe { asm!("cvt.rpi.f64.f64 {y}, {x};", y = out(reg64) y, x = in(reg64) x) };
        y
    }
    /// `x^y` for `x >= 0` as `2^(y log2 x)` (CUDA's fast-math `__powf`),
    /// with `powf`'s `x^0 = 1` and `0^y = 0` for `y > 0`.
    #[inline(always)]
    pub fn pow(x: f32, y: f32) -> f32 {
        if y == 0.0 {
            1.0
        } else if x == 0.0 {
            0.0
        } else {
            exp(y * ln(x))
        }
    }
}

#[cfg(not(target_arch = "nvptx64"))]
mod imp {
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        x.exp()
    }
    #[inline(always)]
    pub fn ln(x: f32) -> f32 {
        x.ln()
    }
    #[inline(always)]
    pub fn sqrt(x: f32) -> f32 {
        x.sqrt()
    }
    #[inline(always)]
    pub fn floor(x: f32) -> f32 {
        x.floor()
    }
    #[inline(always)]
    pub fn floor64(x: f64) -> f64 {
        x.floor()
    }
    #[inline(always)]
    pub fn ceil64(x: f64) -> f64 {
        x.ceil()
    }
    #[inline(always)]
    pub fn pow(x: f32, y: f32) -> f32 {
        x.powf(y)
    }
}

pub use imp::{ceil64, exp, floor, floor64, ln, pow, sqrt};

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub fn abs(x: f32) -> f32 {
    if x < 0.0 {
        -x
    } else {
        x
    }
}

/// Paddle's smooth-L1 of one difference `d` (inside weight applied) with
/// `sigma2 = sigma^2`: `(value, slope)`, `(0.5 sigma^2 d^2, sigma^2 d)`
/// where `|d| < 1 / sigma^2`, else `(|d| - 0.5 / sigma^2, sign d)`; the
/// expressions of core's `losses::smooth_l1`, so the emulator gives its bits.
#[inline(always)]
pub fn smooth_l1(d: f32, sigma2: f32) -> (f32, f32) {
    if abs(d) < 1.0 / sigma2 {
        (0.5 * sigma2 * d * d, sigma2 * d)
    } else {
        (abs(d) - 0.5 / sigma2, d.signum())
    }
}

/// Core's `losses::softmax_cross_entropy` of one row of `classes` logits
/// against `label`; with a non-null `grad`, `grad[c] = scale * (p_c -
/// [c == label])`.
///
/// # Safety
/// `logits` (and a non-null `grad`) hold `classes` values, `label < classes`.
#[inline(always)]
pub unsafe fn softmax_cross_entropy(
    logits: *const f32,
    classes: u32,
    label: u32,
    grad: *mut f32,
    scale: f32,
) -> f32 {
    let mut max = f32::NEG_INFINITY;
    let mut c = 0;
    while c < classes as usize {
        max = max.max(*logits.add(c));
        c += 1;
    }
    let mut sum = 0.0;
    let mut c = 0;
    while c < classes as usize {
        sum += exp(*logits.add(c) - max);
        c += 1;
    }
    let log_sum = ln(sum);
    if !grad.is_null() {
        let mut c = 0;
        while c < classes as usize {
            let p = exp(*logits.add(c) - max - log_sum);
            *grad.add(c) = scale * (p - if c == label as usize { 1.0 } else { 0.0 });
            c += 1;
        }
    }
    max + log_sum - *logits.add(label as usize)
}
