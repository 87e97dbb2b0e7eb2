//! Choosing where to train: `--device auto|cpu|gpu` (default auto), and
//! `PULSEFOCUS_GPU_EMULATOR=1`, which makes `gpu` and `auto` open the
//! emulated GPU (docs/gpu.md).
//!
//! The probe first checks that the driver library can be opened at all
//! (`is_culib_present`), because cudarc panics when asked for a context
//! without one; only then does it count devices.
use std::fmt;
use std::str::FromStr;

use cudarc::driver::CudaContext;

use crate::context::{emulator_requested, EMULATOR_VAR};

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The GPU when a driver and a device exist, else the CPU.
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceRequest, String> {
        match s {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "gpu" => Ok(DeviceRequest::Gpu),
            other => Err(format!(
                "unknown device '{other}': expected auto, cpu or gpu"
            )),
        }
    }
}

/// A GPU the driver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_memory: usize,
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (major, minor) = self.compute_capability;
        write!(
            f,
            "GPU {}: {} (sm_{major}{minor}, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.total_memory as f64 / (1u64 << 30) as f64
        )
    }
}

/// Where the work will run, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectedDevice {
    Cpu {
        reason: String,
    },
    Gpu(GpuInfo),
    /// `PULSEFOCUS_GPU_EMULATOR=1`: the GPU code path on the CPU grid emulator.
    Emulated,
}

impl fmt::Display for SelectedDevice {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SelectedDevice::Cpu { reason } => write!(f, "CPU ({reason})"),
            SelectedDevice::Gpu(info) => write!(f, "{info}"),
            SelectedDevice::Emulated => write!(
                f,
                "emulated GPU ({EMULATOR_VAR}=1; kernels run on the CPU grid emulator)"
            ),
        }
    }
}

/// Looks for the driver and the first GPU. `Err` says what is missing.
pub fn probe() -> Result<GpuInfo, String> {
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no NVIDIA driver (libcuda) found".into());
    }
    let count = CudaContext::device_count()
        .map_err(|e| format!("the NVIDIA driver reports no usable GPU ({e})"))?;
    if count < 1 {
        return Err("the NVIDIA driver reports no GPU".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0 ({e})"))?;
    let describe = |e| format!("cannot query GPU 0 ({e})");
    Ok(GpuInfo {
        ordinal: 0,
        name: ctx.name().map_err(describe)?,
        compute_capability: ctx.compute_capability().map_err(describe)?,
        total_memory: ctx.total_mem().map_err(describe)?,
    })
}

/// Where `request` runs on this machine: `cpu` on the CPU; with
/// `PULSEFOCUS_GPU_EMULATOR=1`, `gpu` and `auto` on the emulated GPU
/// (without probing for a driver); else as [`select`] decides from [`probe`].
pub fn resolve(request: DeviceRequest) -> Result<SelectedDevice, String> {
    match request {
        // No need to load the driver when the CPU is asked for.
        DeviceRequest::Cpu => select(request, Err(String::new())),
        _ if emulator_requested() => Ok(SelectedDevice::Emulated),
        _ => select(request, probe()),
    }
}

/// Resolves a request against what `probe` found: `gpu` without one is an
/// error that says what is missing; `auto` falls back to the CPU and says why.
pub fn select(
    request: DeviceRequest,
    probed: Result<GpuInfo, String>,
) -> Result<SelectedDevice, String> {
    match (request, probed) {
        (DeviceRequest::Cpu, _) => Ok(SelectedDevice::Cpu {
            reason: "--device cpu".into(),
        }),
        (_, Ok(info)) => Ok(SelectedDevice::Gpu(info)),
        (DeviceRequest::Auto, Err(why)) => Ok(SelectedDevice::Cpu {
            reason: format!("auto: {why}"),
        }),
        (DeviceRequest::Gpu, Err(why)) => Err(format!("--device gpu: {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orin() -> GpuInfo {
        GpuInfo {
            ordinal: 0,
            name: "Orin".into(),
            compute_capability: (8, 7),
            total_memory: 8 << 30,
        }
    }

    #[test]
    fn parses_the_three_choices() {
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceRequest::Cpu));
        assert_eq!("gpu".parse(), Ok(DeviceRequest::Gpu));
        assert!("cuda"
            .parse::<DeviceRequest>()
            .unwrap_err()
            .contains("expected auto, cpu or gpu"));
    }

    #[test]
    fn resolution_rules() {
        let none = || Err("no NVIDIA driver (libcuda) found".to_string());
        assert_eq!(
            select(DeviceRequest::Auto, Ok(orin())),
            Ok(SelectedDevice::Gpu(orin()))
        );
        assert_eq!(
            select(DeviceRequest::Gpu, Ok(orin())),
            Ok(SelectedDevice::Gpu(orin()))
        );
        assert_eq!(
            select(DeviceRequest::Auto, none()).unwrap().to_string(),
            "CPU (auto: no NVIDIA driver (libcuda) found)"
        );
        assert_eq!(
            select(DeviceRequest::Gpu, none()).unwrap_err(),
            "--device gpu: no NVIDIA driver (libcuda) found"
        );
        assert!(matches!(
            select(DeviceRequest::Cpu, Ok(orin())),
            Ok(SelectedDevice::Cpu { .. })
        ));
        assert_eq!(orin().to_string(), "GPU 0: Orin (sm_87, 8.0 GiB)");
        assert_eq!(
            SelectedDevice::Emulated.to_string(),
            "emulated GPU (PULSEFOCUS_GPU_EMULATOR=1; kernels run on the CPU grid emulator)"
        );
    }

    #[test]
    fn probing_never_panics_and_agrees_with_the_driver_check() {
        // On a machine without libcuda this must be a clean Err, not a panic.
        let present = unsafe { cudarc::driver::sys::is_culib_present() };
        match probe() {
            Ok(info) => assert!(present && !info.name.is_empty()),
            Err(why) if !present => assert_eq!(why, "no NVIDIA driver (libcuda) found"),
            Err(why) => assert!(why.contains("GPU"), "{why}"),
        }
    }
}
