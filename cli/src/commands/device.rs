//! Where models run: the `--device auto|cpu|gpu` option of the commands that
//! run a model, and `pulsefocus device`, which shows what that option resolves
//! to on this machine and, for a GPU, whether the kernels load on it.

use clap::Args as ClapArgs;
use pulsefocus_gpu::device::{probe, select};
use pulsefocus_gpu::{DeviceRequest, Gpu, SelectedDevice};

#[derive(ClapArgs, Debug, Clone)]
pub struct DeviceArg {
    /// auto (an NVIDIA GPU when the driver and a device are present, else the
    /// CPU), cpu, or gpu (an error without one).
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

impl DeviceArg {
    fn resolve(&self) -> anyhow::Result<SelectedDevice> {
        let probed = match self.device {
            // No need to load the driver when the CPU is asked for.
            DeviceRequest::Cpu => Err(String::new()),
            _ => probe(),
        };
        select(self.device, probed).map_err(anyhow::Error::msg)
    }

    /// For `train`, `eval` and `infer`: resolves the request and says which
    /// device was chosen. These run on the CPU backend; the GPU kernels are
    /// tested and benchmarked on their own until the GPU backend drives a
    /// whole training step, so `--device gpu` says so instead of pretending.
    pub fn choose(&self) -> anyhow::Result<()> {
        match self.resolve()? {
            SelectedDevice::Gpu(info) if self.device == DeviceRequest::Gpu => anyhow::bail!(
                "--device gpu: found {info}, but a whole training step does not run on the GPU backend yet; use --device cpu"
            ),
            SelectedDevice::Gpu(info) => {
                eprintln!("device: CPU ({info} found; the GPU training backend is not wired yet)")
            }
            cpu => eprintln!("device: {cpu}"),
        }
        Ok(())
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
    if let SelectedDevice::Gpu(_) = selected {
        // Loading the module JIT-compiles the PTX: proof the kernels run here.
        let gpu = Gpu::open()?;
        println!(
            "kernels: {} loaded (PTX sm_53, JIT-compiled by the driver)",
            pulsefocus_gpu::context::KERNELS.len()
        );
        let (free, total) = gpu.memory_info()?;
        println!(
            "memory: {:.1} GiB free of {:.1} GiB",
            free as f64 / (1u64 << 30) as f64,
            total as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}
