//! `--device cpu|cuda[:N]`: which backend and card a run uses, chosen at run time.

use std::fmt;
use std::str::FromStr;

/// A device named on the command line or in a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU, through burn's ndarray backend.
    Cpu,
    /// CUDA card `N`, through burn-cuda.
    Cuda(usize),
}

impl DeviceSpec {
    /// The burn-cuda device of a CUDA spec (creating it does not touch the driver yet).
    pub fn cuda_device(self) -> Option<burn::backend::cuda::CudaDevice> {
        match self {
            DeviceSpec::Cuda(index) => Some(burn::backend::cuda::CudaDevice::new(index)),
            DeviceSpec::Cpu => None,
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("unknown device `{s}` (devices: cpu, cuda, cuda:N)");
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => {
                let index = s.strip_prefix("cuda:").ok_or_else(bad)?;
                index.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(
            "cuda:3".parse::<DeviceSpec>().map(|d| d.to_string()),
            Ok("cuda:3".to_string())
        );
        assert!("cuda:x".parse::<DeviceSpec>().unwrap_err().contains("cuda:N"));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!(DeviceSpec::Cpu.cuda_device().is_none());
    }
}
