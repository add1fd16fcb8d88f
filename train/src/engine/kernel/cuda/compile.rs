//! Compiling `kernels.cu` with NVRTC for the device's architecture, and caching the cubin on disk.
//!
//! The source is embedded in the binary and compiled at run time (the build machine needs no CUDA
//! toolkit). NVRTC compiles straight to machine code (`sm_XY`, a cubin), so the driver does not
//! JIT any PTX; an NVRTC of the driver's CUDA major version or older is needed (a cubin from a
//! newer major version may not load: `CudaOps::new` then reports it). The cubin is kept under the
//! kernel cache folder (`device::configure_kernel_cache`, shared with burn-cuda's) in a file named by a
//! hash of the source, the architecture, the options and NVRTC's version; the second process
//! loads it in milliseconds. A cached file that is not a whole ELF image (a write cut short) is
//! compiled again, and so is one the driver refuses (`fresh`).
//!
//! `scripts/nvrtc_check.py` compiles the same source with these options on a machine without a GPU
//! (NVRTC from a CUDA wheel) and lists each kernel's registers and spills: a change to `kernels.cu`
//! is checked there before a device call is spent on it. Keep its options in step with `OPTIONS`.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::sys;

use crate::error::TrainError;

/// The kernels' source.
pub const SOURCE: &str = include_str!("kernels.cu");

const OPTIONS: &[&str] = &["-std=c++17", "--fmad=true"];

fn err(m: impl Into<String>) -> TrainError {
    TrainError::Device(m.into())
}

/// FNV-1a, 64 bits: a hash that is the same in every build (the cache key).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// NVRTC's version, or an error when the library cannot be loaded.
pub fn nvrtc_version() -> Result<(i32, i32), TrainError> {
    // SAFETY: probing for the library has no preconditions; the call is made only when present.
    if !unsafe { sys::is_culib_present() } {
        return Err(err(
            "NVRTC (libnvrtc) was not found; it ships with the CUDA toolkit (or pip's nvidia-cuda-nvrtc): add its folder to LD_LIBRARY_PATH",
        ));
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: both pointers are valid for writes.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| err(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// The cubin of `source` for compute capability `cc` (e.g. `(9, 0)`), from `cache` when there (and
/// not `fresh`), else compiled and stored there. Returns the cubin and whether it came from the
/// cache.
///
/// # Errors
/// When NVRTC is missing or the compilation fails (the log is in the message).
pub fn cubin(source: &str, cc: (i32, i32), cache: Option<&Path>, fresh: bool) -> Result<(Vec<u8>, bool), TrainError> {
    let version = nvrtc_version()?;
    let arch = format!("--gpu-architecture=sm_{}{}", cc.0, cc.1);
    let key = fnv1a(&[
        source.as_bytes(),
        arch.as_bytes(),
        OPTIONS.join(" ").as_bytes(),
        format!("{}.{}", version.0, version.1).as_bytes(),
    ]);
    let file: Option<PathBuf> = cache.map(|d| d.join(format!("firebrand-fast-{key:016x}.cubin")));
    if let Some(f) = &file
        && !fresh
        && let Ok(bytes) = std::fs::read(f)
        && whole_elf(&bytes)
    {
        return Ok((bytes, true));
    }
    let bytes = compile(source, &arch)?;
    if let Some(f) = &file {
        // A cache that cannot be written only costs the next process a compilation.
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = f.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, f);
        }
    }
    Ok((bytes, false))
}

/// Whether `bytes` is a whole 64-bit ELF image: the magic, and the section header table (which
/// the linker writes last) inside the file. The driver reads a cubin without being told its length.
fn whole_elf(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u64);
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    match (u64_at(0x28), u16_at(0x3a), u16_at(0x3c)) {
        (Some(shoff), Some(shentsize), Some(shnum)) => shoff
            .checked_add(shentsize * shnum)
            .is_some_and(|end| end <= bytes.len() as u64),
        _ => false,
    }
}

fn compile(source: &str, arch: &str) -> Result<Vec<u8>, TrainError> {
    let src = CString::new(source).map_err(|_| err("kernel source holds a NUL byte"))?;
    let name = c"kernels.cu";
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: `src` and `name` outlive the program (destroyed below); null header arrays with 0.
    unsafe {
        sys::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            0,
            std::ptr::null(),
            std::ptr::null(),
        )
    }
    .result()
    .map_err(|e| err(format!("nvrtcCreateProgram: {e:?}")))?;
    let opts: Vec<CString> = OPTIONS
        .iter()
        .copied()
        .chain(std::iter::once(arch))
        .map(|o| CString::new(o).expect("options hold no NUL"))
        .collect();
    let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `prog` was created above; `ptrs` points at live C strings.
    let compiled = unsafe { sys::nvrtcCompileProgram(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
    let result = if compiled.result().is_err() {
        Err(err(format!(
            "NVRTC could not compile the kernels ({arch}):\n{}",
            log(prog)
        )))
    } else {
        let mut size = 0usize;
        // SAFETY: the program compiled; `size` is valid for writes, then the buffer holds `size` bytes.
        unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }
            .result()
            .map_err(|e| err(format!("nvrtcGetCUBINSize: {e:?}")))
            .and_then(|_| {
                let mut buf = vec![0u8; size];
                unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) }
                    .result()
                    .map_err(|e| err(format!("nvrtcGetCUBIN: {e:?}")))
                    .map(|_| buf)
            })
    };
    // SAFETY: destroyed once.
    unsafe {
        let _ = sys::nvrtcDestroyProgram(&mut prog);
    }
    result
}

fn log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: `prog` is live; the buffer holds `size` bytes.
    unsafe {
        if sys::nvrtcGetProgramLogSize(prog, &mut size).result().is_err() || size == 0 {
            return String::new();
        }
        let mut buf = vec![0 as c_char; size];
        if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr()).result().is_err() {
            return String::new();
        }
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_hash_is_stable() {
        // Fixed values: the cache key must not change between builds or Rust versions.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(&[b"a"]), fnv1a(&[b"a"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }

    /// A 64-bit ELF header whose section table ends at `end` (of a file of `len` bytes).
    fn elf(len: usize, shoff: u64, shentsize: u16, shnum: u16) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&shentsize.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        b
    }

    #[test]
    fn a_cut_short_or_foreign_cache_file_is_not_a_cubin() {
        assert!(whole_elf(&elf(1064, 104, 64, 15)));
        assert!(!whole_elf(&elf(1063, 104, 64, 15)), "section table past the end");
        assert!(!whole_elf(&elf(1064, u64::MAX, 64, 15)), "offset overflow");
        let mut text = elf(1064, 104, 64, 15);
        text[0] = b'#';
        assert!(!whole_elf(&text));
        let mut elf32 = elf(1064, 104, 64, 15);
        elf32[4] = 1;
        assert!(!whole_elf(&elf32));
        assert!(!whole_elf(&[]) && !whole_elf(b"\x7fELF"));
    }

    /// A real linker's output (this test binary) passes; so the check does not refuse whole cubins,
    /// which NVRTC links the same way.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_whole_elf_file_is_accepted() {
        let exe = std::fs::read("/proc/self/exe").expect("the test binary is readable");
        assert!(whole_elf(&exe));
        assert!(!whole_elf(&exe[..exe.len() / 2]));
    }

    /// Where NVRTC is installed (a CUDA toolkit, or pip's nvidia-cuda-nvrtc on LD_LIBRARY_PATH),
    /// the embedded kernels compile for Hopper and for Ampere; elsewhere the test says so and passes.
    #[test]
    fn kernels_compile_with_nvrtc_when_present() {
        if nvrtc_version().is_err() {
            eprintln!("NVRTC not found: kernel compilation not checked here");
            return;
        }
        for cc in [(9, 0), (8, 0)] {
            let (bin, cached) = cubin(SOURCE, cc, None, false).unwrap_or_else(|e| panic!("sm_{}{}: {e}", cc.0, cc.1));
            assert!(!cached);
            assert!(bin.len() > 1000 && whole_elf(&bin), "a cubin is a whole ELF file");
            assert!(!whole_elf(&bin[..bin.len() - 1]), "one byte short is not");
        }
    }
}
