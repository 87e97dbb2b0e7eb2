//! Where models run: the `--device auto|cpu|gpu` option of the commands that
//! run a model (`train`, `eval -c`, `infer`), and `pulsefocus device`, which
//! shows what that option resolves to on this machine and, for a GPU, whether
//! the kernels load on it.
//!
//! A command writes its model work once, generic over the core `Backend`
//! ([`OnBackend`]); [`DeviceArg::run_on`] picks the backend once and runs it
//! there, so there is one copy of each command whatever the device.

use clap::Args as ClapArgs;
use pulsefocus_core::{Backend, CpuBackend};
use pulsefocus_gpu::device::resolve;
use pulsefocus_gpu::{DeviceRequest, Gpu, GpuBackend, SelectedDevice};

#[derive(ClapArgs, Debug, Clone)]
pub struct DeviceArg {
    /// auto (an NVIDIA GPU when the driver and a device are present and the
    /// kernels load, else the CPU), cpu, or gpu (an error without one).
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

/// A command's model work, written once for any backend.
pub trait OnBackend {
    fn run<B: Backend>(self, backend: &B) -> anyhow::Result<()>;
}

/// Runs `work` on a GPU backend; a device failure it recorded is the error
/// to report (whatever the work made of the skipped operations after it).
fn run_on_gpu(gpu: &GpuBackend, work: impl OnBackend) -> anyhow::Result<()> {
    let result = work.run(gpu);
    gpu.check()?;
    result
}

impl DeviceArg {
    fn resolve(&self) -> anyhow::Result<SelectedDevice> {
        resolve(self.device).map_err(anyhow::Error::msg)
    }

    /// Opens the backend `--device` asks for, says on stderr which one it
    /// is, and runs `work` on it. `auto` falls back to the CPU when no GPU is
    /// found or the GPU's kernels do not load (and says why); `gpu` makes
    /// either an error. With `PULSEFOCUS_GPU_EMULATOR=1`, `gpu` and `auto`
    /// run on the emulated GPU.
    pub fn run_on(&self, work: impl OnBackend) -> anyhow::Result<()> {
        let info = match self.resolve()? {
            SelectedDevice::Gpu(info) => info,
            SelectedDevice::Emulated => {
                let gpu = GpuBackend::emulated()?;
                eprintln!("device: {}", SelectedDevice::Emulated);
                return run_on_gpu(&gpu, work);
            }
            cpu => {
                eprintln!("device: {cpu}");
                return work.run(&CpuBackend::new());
            }
        };
        match GpuBackend::open() {
            Ok(gpu) => {
                eprintln!("device: {info}");
                run_on_gpu(&gpu, work)
            }
            Err(err) if self.device == DeviceRequest::Gpu => {
                anyhow::bail!("--device gpu: {info} found, but opening it failed: {err}")
            }
            Err(err) => {
                eprintln!("device: CPU (auto: {info} found, but opening it failed: {err})");
                work.run(&CpuBackend::new())
            }
        }
    }
}

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let selected = args.device.resolve()?;
    println!("device: {selected}");
    let gpu = match selected {
        SelectedDevice::Cpu { .. } => return Ok(()),
        SelectedDevice::Emulated => {
            let gpu = Gpu::emulated()?;
            println!(
                "kernels: {} run by the grid emulator, each launch checked against the PTX (sm_53)",
                pulsefocus_gpu::context::KERNELS.len()
            );
            gpu
        }
        SelectedDevice::Gpu(_) => {
            // Loading the module JIT-compiles the PTX: proof the kernels run here.
            let gpu = Gpu::open()?;
            println!(
                "kernels: {} loaded (PTX sm_53, JIT-compiled by the driver)",
                pulsefocus_gpu::context::KERNELS.len()
            );
            gpu
        }
    };
    let (free, total) = gpu.memory_info()?;
    // GiB for GPUs; MiB for the small emulated devices tests make.
    let (unit, name) = if total >= 1 << 30 {
        ((1u64 << 30) as f64, "GiB")
    } else {
        ((1u64 << 20) as f64, "MiB")
    };
    println!(
        "memory: {:.1} {name} free of {:.1} {name}",
        free as f64 / unit,
        total as f64 / unit
    );
    Ok(())
}
