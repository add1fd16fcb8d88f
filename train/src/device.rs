//! `--device cpu|cuda[:N]`: which backend and card a run uses, chosen at run time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use cubecl_runtime::config::cache::CacheConfig;
use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig};

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

/// Files in which cubecl (burn-cuda's kernel runtime) looks for its configuration, in the current
/// folder and its parents.
const CUBECL_CONFIG_FILES: &[&str] = &["cubecl.toml", "CubeCL.toml", "burn.toml", "Burn.toml"];

/// Keeps burn-cuda's autotune results and compiled PTX in one folder across runs, so a second run
/// does not pay the first one's kernel compilation and autotuning again. Returns the folder, or
/// `None` when a cubecl/burn configuration file is in charge (its settings are then left alone).
///
/// The folder is `$FIREBRAND_KERNEL_CACHE`, else `$XDG_CACHE_HOME/firebrand/kernels`, else
/// `~/.cache/firebrand/kernels`. Without this, cubecl keeps autotune results under a `target/`
/// folder next to the nearest `Cargo.toml` (or nowhere useful for an installed binary) and
/// compiles every kernel again in each process. Call it before the first CUDA operation; later
/// calls return the first call's answer.
pub fn configure_kernel_cache() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let cwd = std::env::current_dir().ok()?;
        if cwd
            .ancestors()
            .any(|d| CUBECL_CONFIG_FILES.iter().any(|f| d.join(f).is_file()))
        {
            return None;
        }
        let dir = kernel_cache_dir(
            std::env::var_os("FIREBRAND_KERNEL_CACHE").map(PathBuf::from),
            std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
            std::env::var_os("HOME").map(PathBuf::from),
        )?;
        let mut config = CubeClRuntimeConfig::default().override_from_env();
        config.autotune.cache = CacheConfig::File(dir.clone());
        config.compilation.cache = Some(CacheConfig::File(dir.clone()));
        CubeClRuntimeConfig::set(config);
        Some(dir)
    })
    .clone()
}

fn kernel_cache_dir(explicit: Option<PathBuf>, xdg: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| xdg.map(|x| x.join("firebrand").join("kernels")))
        .or_else(|| home.map(|h| Path::new(&h).join(".cache").join("firebrand").join("kernels")))
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

    #[test]
    fn kernel_cache_folder_prefers_the_explicit_then_xdg_then_home() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(kernel_cache_dir(p("/k"), p("/x"), p("/h")), p("/k"));
        assert_eq!(kernel_cache_dir(None, p("/x"), p("/h")), p("/x/firebrand/kernels"));
        assert_eq!(kernel_cache_dir(None, None, p("/h")), p("/h/.cache/firebrand/kernels"));
        assert_eq!(kernel_cache_dir(None, None, None), None);
    }
}
