//! `pulsefocus device`: which device `--device auto|cpu|gpu` resolves to on
//! this machine, and, for a GPU, whether the kernels load on it.
use pulsefocus_gpu::device::{probe, select};
use pulsefocus_gpu::{DeviceRequest, Gpu, SelectedDevice};

#[derive(clap::Args)]
pub struct Args {
    /// auto (the GPU when an NVIDIA driver and a GPU exist, else the CPU), cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: DeviceRequest,
}

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
    }
    Ok(())
}
