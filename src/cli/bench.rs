//! `firebrand bench matmul`: the backend's square matmul throughput per dtype, the number that
//! bounds every training step (see BENCHMARKS.md for how it compares with PyTorch on one card).
//!
//! Warm-up iterations (kernel compilation and autotuning) are timed and printed separately from
//! the measured ones; the device is synchronised before each clock read.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use burn::backend::{Cuda, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use clap::{Args, Subcommand, ValueEnum};
use firebrand_train::device::DeviceSpec;
use half::{bf16, f16};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Square matmul throughput in TFLOP/s.
    Matmul(MatmulArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    F32,
    Bf16,
    F16,
}

#[derive(Debug, Args)]
pub struct MatmulArgs {
    /// Matrix side.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Element type (bf16 and f16 on CUDA only).
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// Measured iterations.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Matmul(a) => {
            let device: DeviceSpec = a.device.parse().map_err(anyhow::Error::msg).context("--device")?;
            match (device, a.dtype) {
                (DeviceSpec::Cpu, Dtype::F32) => matmul::<NdArray<f32>>(&a, &Default::default()),
                (DeviceSpec::Cpu, _) => anyhow::bail!("--dtype bf16/f16 needs --device cuda"),
                (DeviceSpec::Cuda(i), dtype) => {
                    firebrand_train::device::configure_kernel_cache();
                    let d = burn::backend::cuda::CudaDevice::new(i);
                    match dtype {
                        Dtype::F32 => matmul::<Cuda<f32>>(&a, &d),
                        Dtype::Bf16 => matmul::<Cuda<bf16>>(&a, &d),
                        Dtype::F16 => matmul::<Cuda<f16>>(&a, &d),
                    }
                }
            }
        }
    }
}

fn matmul<B: Backend>(a: &MatmulArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    let n = a.size;
    let x = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let y = Tensor::<B, 2>::random([n, n], Distribution::Normal(0.0, 1.0), device);
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"));
    sync()?;
    let warm = Instant::now();
    for _ in 0..3 {
        let _ = x.clone().matmul(y.clone());
    }
    sync()?;
    let warm = warm.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..a.iters.max(1) {
        let _ = x.clone().matmul(y.clone());
    }
    sync()?;
    let secs = start.elapsed().as_secs_f64() / a.iters.max(1) as f64;
    let tflops = 2.0 * (n as f64).powi(3) / secs / 1e12;
    println!(
        "matmul {n}x{n} {:?} on {}: {:.3} ms/iter, {tflops:.1} TFLOP/s (warm-up: 3 iterations in {warm:.2} s); element type {}",
        a.dtype,
        a.device,
        secs * 1e3,
        std::any::type_name::<B::FloatElem>()
    );
    Ok(ExitCode::SUCCESS)
}
