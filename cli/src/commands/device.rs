//! `--device auto|cpu|gpu` for the commands that run a model.

use clap::Args as ClapArgs;
use pulsefocus_gpu::device::{probe, select, DeviceRequest, SelectedDevice};

#[derive(ClapArgs, Debug, Clone)]
pub struct DeviceArg {
    /// Where to run: `auto` uses an NVIDIA GPU when the driver and a device are
    /// present, else the CPU; `gpu` without one is an error.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceRequest,
}

fn parse_device(s: &str) -> Result<DeviceRequest, String> {
    s.parse()
}

impl DeviceArg {
    /// Resolves the request and says which device was chosen. Training and
    /// inference run on the CPU backend; the GPU kernels are tested and
    /// benchmarked on their own until the GPU backend drives a whole step.
    pub fn choose(&self) -> anyhow::Result<()> {
        let selected = match self.device {
            DeviceRequest::Cpu => select(DeviceRequest::Cpu, Err(String::new())),
            request => select(request, probe()),
        }
        .map_err(anyhow::Error::msg)?;
        match &selected {
            SelectedDevice::Gpu(info) if self.device == DeviceRequest::Gpu => {
                anyhow::bail!(
                    "--device gpu: found {info}, but a whole training step does not run on the GPU backend yet; use --device cpu"
                )
            }
            SelectedDevice::Gpu(info) => {
                eprintln!("device: CPU ({info} found; the GPU training backend is not wired yet)")
            }
            SelectedDevice::Cpu { .. } => eprintln!("device: {selected}"),
        }
        Ok(())
    }
//! `pulsefocus device`: which device `--device auto|cpu|gpu` resolves to on
//! this machine, and, for a GPU, whether the kernels load on it.
use pulsefocus_gpu::device::{probe, select};
use pulsefocus_gpu::{DeviceRequest, Gpu, SelectedDevice};
#[derive(clap::Args)]
pub struct Args {
    /// auto (the GPU when an NVIDIA driver and a GPU exist, else the CPU), cpu or gpu.
    #[arg(long, default_value = "auto")]
pub fn run(args: Args) -> anyhow::Result<()> {
    let selected = select(args.device, probe()).map_err(anyhow::Error::msg)?;
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
    Ok(())
}
