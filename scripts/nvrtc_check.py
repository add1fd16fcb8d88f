"""Compile the kernel engine's kernels (train/src/engine/kernel/cuda/kernels.cu) with NVRTC, with the options
of train/src/engine/kernel/cuda/compile.rs, on a machine without a GPU: a compile error or a register spill
shows here before a device call is spent on it. Needs libnvrtc, e.g. from PyTorch's CUDA wheels
(`pip install nvidia-cuda-nvrtc`), found on LD_LIBRARY_PATH or beside the running Python.

    python3 scripts/nvrtc_check.py [--arch sm_90] [--kernel NAME ...]

Prints each kernel's registers, stack frame and spills (ptxas -v; the d = 64 attention kernels spill a little
under their register caps, measured faster than without); exits 1 on a compile error."""
import argparse, ctypes, glob, os, re, site, sys

ap = argparse.ArgumentParser()
ap.add_argument("--arch", default="sm_90")
ap.add_argument("--source", default="train/src/engine/kernel/cuda/kernels.cu")
ap.add_argument("--kernel", nargs="*", help="only report kernels whose name contains one of these")
args = ap.parse_args()

def load_nvrtc():
    names = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError:
            pass
    for root in site.getsitepackages():
        for pat in ["nvidia/*/lib/libnvrtc.so*"]:
            for f in sorted(glob.glob(os.path.join(root, pat))):
                if "builtins" not in f and ".alt." not in f:
                    return ctypes.CDLL(f)
    sys.exit("no libnvrtc found (pip install nvidia-cuda-nvrtc, or add its folder to LD_LIBRARY_PATH)")

lib = load_nvrtc()
src = open(args.source, "rb").read()
prog = ctypes.c_void_p()
if lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"kernels.cu", 0, None, None) != 0:
    sys.exit("nvrtcCreateProgram failed")
# compile.rs's OPTIONS, its architecture flag, and ptxas's resource report.
opts = [b"-std=c++17", b"--fmad=true", f"--gpu-architecture={args.arch}".encode(), b"-Xptxas=-v"]
rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
n = ctypes.c_size_t()
lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
log = ctypes.create_string_buffer(n.value)
lib.nvrtcGetProgramLog(prog, log)
text = log.value.decode(errors="replace")
if rc != 0:
    print(text)
    sys.exit(f"NVRTC could not compile {args.source} for {args.arch}")
kernel, stack, spill = None, 0, 0
for line in text.splitlines():
    m = re.search(r"Function properties for (\S+)", line)
    if m:
        kernel, stack, spill = m.group(1), 0, 0
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        stack, spill = int(m.group(1)), int(m.group(2)) + int(m.group(3))
    m = re.search(r"Used (\d+) registers", line)
    if m and kernel and (not args.kernel or any(k in kernel for k in args.kernel)):
        extra = (f"  stack {stack} bytes" if stack else "") + (f"  spills {spill} bytes" if spill else "")
        print(f"{kernel:28} {int(m.group(1)):4} registers{extra}")
