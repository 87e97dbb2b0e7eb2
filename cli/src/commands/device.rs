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
}
