//! `firebrand bench matmul`: the backend's square matmul throughput per dtype, the number that
//! bounds every training step (see BENCHMARKS.md for how it compares with PyTorch on one card).
//! `firebrand bench multiverse`: wall-clock of Multiverse parallel generation (fork at `</Goal>`,
//! paths as a batch) against generating the same number of tokens sequentially, on a randomly
//! initialised model whose prompt ends at a goal with `--paths` outlines.
//!
//! `firebrand bench rollout`: GRPO's rollout throughput: prompts repeated G times, sampled in one
//! batched call with the KV cache at temperature 1, with no stop token so every row runs to
//! `--new-tokens` (the shape transformers' `generate` is timed at in `benches/grpo/rollout.sh`).
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
use firebrand_train::engine::kernel::cuda::CudaOps;
use half::{bf16, f16};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Square matmul throughput in TFLOP/s.
    Matmul(MatmulArgs),
    /// Multiverse fork/join generation against sequential generation of the same token count.
    Multiverse(MultiverseArgs),
    /// GRPO rollout throughput: G sampled completions per prompt, full length.
    Rollout(RolloutArgs),
    /// The kernel engine on CUDA: every kernel against the CPU reference, the whole step against
    /// the burn engine (SFT's fused pass and the split pass of DPO and GRPO), and kernel timings
    /// beside burn's at the reference shapes.
    Kernels(KernelsArgs),
    /// Training-step throughput of a method (sft, dpo, grpo) on the kernel engine on random full
    /// rows, with a profile (`bench sft` is `bench step --method sft`).
    #[command(alias = "sft")]
    Step(StepArgs),
}

#[derive(Debug, Args)]
pub struct KernelsArgs {
    /// cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip the timings (checks only).
    #[arg(long)]
    no_timings: bool,
}

/// The method `bench step` times.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StepMethod {
    Sft,
    Dpo,
    Grpo,
}

#[derive(Debug, Args)]
pub struct StepArgs {
    /// cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// sft (every position trained), dpo (pairs; replies are the second half of each row) or
    /// grpo (completions after quarter-row prompts, at temperature 1 with entropies).
    #[arg(long, value_enum, default_value = "sft")]
    method: StepMethod,
    /// GRPO's KL weight: above 0, a reference engine scores each step's rows too.
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    /// SFT with the localist dial at this λ in every layer (Δ 8, off-target penalty).
    #[arg(long)]
    localist: Option<f64>,
    /// Rows per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 1024)]
    seq: usize,
    /// Model width (DESIGN.md's reference configuration by default).
    #[arg(long, default_value_t = 768)]
    hidden: usize,
    /// Layers.
    #[arg(long, default_value_t = 12)]
    layers: usize,
    /// Query heads.
    #[arg(long, default_value_t = 12)]
    heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 12)]
    kv_heads: usize,
    /// SwiGLU width.
    #[arg(long, default_value_t = 2048)]
    intermediate: usize,
    /// Vocabulary.
    #[arg(long, default_value_t = 32_000)]
    vocab: usize,
    /// Measured steps (after the warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Warm-up steps (allocation, cuBLASLt heuristics), not measured.
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Also run one step that waits after every operation and print where its time goes.
    #[arg(long)]
    profile: bool,
    /// Peak dense bf16 TFLOP/s for MFU (989: H100/H200 SXM).
    #[arg(long, default_value_t = 989.0)]
    peak_tflops: f64,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// A checkpoint, a run or a Hugging Face folder.
    model: std::path::PathBuf,
    /// One prompt per line, rendered with the model's chat template.
    #[arg(long)]
    prompts: std::path::PathBuf,
    /// Completions per prompt.
    #[arg(long, default_value_t = 8)]
    generations: usize,
    /// New tokens per completion (no stop token ends a row early).
    #[arg(long, default_value_t = 256)]
    new_tokens: usize,
    /// Timed repetitions (after one untimed call of the same shape, which compiles kernels).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// f32, or bf16 on CUDA.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Debug, Args)]
pub struct MultiverseArgs {
    /// Paths per fork (outlines in the prompt's goal).
    #[arg(long, default_value_t = 4)]
    paths: usize,
    /// Tokens per path (at least 31: the engine does not fork within 30 tokens of its budget).
    #[arg(long, default_value_t = 128)]
    path_tokens: usize,
    /// Model width.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Model depth.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Timed repetitions of each (after one warm-up run of each).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
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
        BenchCommand::Kernels(a) => kernels(&a),
        BenchCommand::Step(a) => step(&a),
        BenchCommand::Multiverse(a) => {
            let device: DeviceSpec = a.device.parse().map_err(anyhow::Error::msg).context("--device")?;
            match device {
                DeviceSpec::Cpu => multiverse::<NdArray<f32>>(&a, &Default::default()),
                DeviceSpec::Cuda(i) => {
                    firebrand_train::device::configure_kernel_cache();
                    multiverse::<Cuda<f32>>(&a, &burn::backend::cuda::CudaDevice::new(i))
                }
            }
        }
        BenchCommand::Rollout(a) => {
            let device: DeviceSpec = a.device.parse().map_err(anyhow::Error::msg).context("--device")?;
            match (device, a.dtype) {
                (DeviceSpec::Cpu, Dtype::F32) => rollout::<NdArray<f32>>(&a, &Default::default()),
                (DeviceSpec::Cpu, _) => anyhow::bail!("--dtype bf16 needs --device cuda"),
                (DeviceSpec::Cuda(i), dtype) => {
                    firebrand_train::device::configure_kernel_cache();
                    let d = burn::backend::cuda::CudaDevice::new(i);
                    match dtype {
                        Dtype::F32 => rollout::<Cuda<f32>>(&a, &d),
                        Dtype::Bf16 => rollout::<Cuda<bf16>>(&a, &d),
                        Dtype::F16 => anyhow::bail!("--dtype f16: rollouts run in f32 or bf16"),
                    }
                }
            }
        }
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

fn rollout<B: Backend>(a: &RolloutArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    use firebrand_train::generate::{SamplingParams, generate};

    anyhow::ensure!(
        a.generations >= 1 && a.repeats >= 1 && a.new_tokens >= 1,
        "--generations, --repeats and --new-tokens must be at least 1"
    );
    let trained = firebrand_train::trained::load_trained::<B>(&a.model, device)?;
    let tok_path = trained
        .tokenizer
        .clone()
        .with_context(|| format!("{}: no tokenizer is known for this model", a.model.display()))?;
    let tok = firebrand_data::tokenizer::load(&tok_path)?;
    let template = trained.template(&tok)?;
    let text = std::fs::read_to_string(&a.prompts).with_context(|| format!("reading {}", a.prompts.display()))?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let messages = [firebrand_data::records::Message::new(
            firebrand_data::records::Role::User,
            line,
        )];
        let ids = tok
            .encode(template.generation_prompt(&messages)?.as_str(), false)
            .map_err(|e| anyhow::anyhow!("tokenizing a prompt: {e}"))?
            .get_ids()
            .to_vec();
        rows.extend(std::iter::repeat_n(ids, a.generations));
    }
    anyhow::ensure!(!rows.is_empty(), "{}: no prompt", a.prompts.display());
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"));
    let params = |seed: u64, n: usize| SamplingParams {
        max_new_tokens: n,
        temperature: 1.0,
        seed,
        ..SamplingParams::default()
    };
    // The first call compiles kernels for every cache length it meets: timed apart.
    let warm = Instant::now();
    generate(&trained.model, &tok, &rows, &params(0, a.new_tokens))?;
    sync()?;
    let warm = warm.elapsed().as_secs_f64();
    let mut rates = Vec::new();
    for r in 0..a.repeats {
        let start = Instant::now();
        let out = generate(&trained.model, &tok, &rows, &params(r as u64 + 1, a.new_tokens))?;
        sync()?;
        let secs = start.elapsed().as_secs_f64();
        let tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
        rates.push(tokens as f64 / secs);
        println!(
            "firebrand rollout {:?} run {}: {} prompts x {} = {} rows x {} new tokens: {tokens} tokens in {secs:.2} s = {:.0} tokens/s",
            a.dtype,
            r + 1,
            rows.len() / a.generations,
            a.generations,
            rows.len(),
            a.new_tokens,
            tokens as f64 / secs
        );
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    let (lo, hi) = rates
        .iter()
        .fold((f64::INFINITY, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    println!(
        "firebrand rollout {:?} on {}: mean {mean:.0} tokens/s over {} runs (min {lo:.0}, max {hi:.0}; first call, compiling kernels: {warm:.2} s)",
        a.dtype,
        a.device,
        rates.len()
    );
    Ok(ExitCode::SUCCESS)
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

fn multiverse<B: Backend>(a: &MultiverseArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    use firebrand_train::generate::parallel::{ParallelParams, generate_parallel};
    use firebrand_train::generate::{SamplingParams, generate};

    anyhow::ensure!(a.paths >= 2, "--paths must be at least 2");
    anyhow::ensure!(a.repeats >= 1, "--repeats must be at least 1");
    anyhow::ensure!(a.path_tokens > 30, "--path-tokens must be above 30");
    let texts: Vec<String> = (0..64)
        .map(|i| format!("Question {i}: split the problem into independent cases and solve each one, case {i}."))
        .collect();
    let tokenizer = firebrand_data::tokenizer::train_bpe(
        &texts,
        &firebrand_data::tokenizer::TrainOptions {
            vocab_size: 512,
            min_frequency: 1,
            extra_special: firebrand_data::multiverse::TAGS.iter().map(|t| t.to_string()).collect(),
        },
    )?;
    let heads = (a.hidden / 64).max(1);
    let config = firebrand_train::ModelConfig {
        model_type: firebrand_train::model::ModelType::Llama,
        hidden_size: a.hidden,
        intermediate_size: a.hidden * 8 / 3,
        num_attention_heads: heads,
        num_key_value_heads: heads,
        num_hidden_layers: a.layers,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        sliding_window: None,
        gemma: None,
        vocab_size: tokenizer.get_vocab_size(true),
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        attention_bias: false,
        head_dim: a.hidden / heads,
        initializer_range: 0.02,
        bos_token_id: None,
        eos_token_id: None,
        extra: Default::default(),
    };
    let model = firebrand_train::Decoder::<B>::init(&config, device)?;
    let outlines: String = (1..=a.paths)
        .map(|i| format!("<Outline>\n{i}: case {i}\n</Outline>\n"))
        .collect();
    let prompt_text =
        format!("Question: solve every case.<Think>\nLet's think in parallel.\n<Parallel>\n<Goal>\n{outlines}</Goal>");
    let prompt: Vec<u32> = tokenizer
        .encode(prompt_text.as_str(), false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .get_ids()
        .to_vec();
    let opening = tokenizer
        .encode("\n<Path>\n1:", false)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .len();
    let sampling = SamplingParams {
        max_new_tokens: opening + a.path_tokens,
        temperature: 0.0,
        ..Default::default()
    };
    let params = ParallelParams {
        sampling: sampling.clone(),
        max_paths: a.paths,
    };
    let sync = || B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"));
    let mut parallel_s = Vec::new();
    let mut sequential_s = Vec::new();
    let mut generated = 0;
    for rep in 0..=a.repeats {
        sync()?;
        let t = Instant::now();
        let out = generate_parallel(&model, &tokenizer, &prompt, &params)?;
        sync()?;
        let p = t.elapsed().as_secs_f64();
        anyhow::ensure!(out.forks.len() == 1, "the prompt did not fork");
        generated = out.tokens.len();
        // The same number of new tokens, one after another.
        let t = Instant::now();
        let seq = generate(
            &model,
            &tokenizer,
            std::slice::from_ref(&prompt),
            &SamplingParams {
                max_new_tokens: generated,
                ..sampling.clone()
            },
        )?;
        sync()?;
        let s = t.elapsed().as_secs_f64();
        anyhow::ensure!(seq[0].tokens.len() == generated, "sequential run stopped early");
        if rep > 0 {
            parallel_s.push(p);
            sequential_s.push(s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, s) = (median(&mut parallel_s), median(&mut sequential_s));
    println!(
        "multiverse generation on {}: {} paths x {} tokens ({generated} new tokens, model {} params): parallel {:.3} s ({:.0} tok/s), sequential {:.3} s ({:.0} tok/s), speedup {:.2}x (median of {})",
        a.device,
        a.paths,
        a.path_tokens,
        config.num_parameters(),
        p,
        generated as f64 / p,
        s,
        generated as f64 / s,
        s / p,
        a.repeats
    );
    Ok(ExitCode::SUCCESS)
}

fn cuda_ordinal(device: &str) -> anyhow::Result<usize> {
    match device
        .parse::<DeviceSpec>()
        .map_err(anyhow::Error::msg)
        .context("--device")?
    {
        DeviceSpec::Cuda(i) => Ok(i),
        DeviceSpec::Cpu => anyhow::bail!("the kernel engine runs on CUDA: --device cuda"),
    }
}

fn open_fast(device: &str) -> anyhow::Result<CudaOps> {
    let i = cuda_ordinal(device)?;
    firebrand_train::device::configure_kernel_cache();
    let t = Instant::now();
    let ops = CudaOps::new(i).context("starting the kernel engine")?;
    println!(
        "kernel engine on {} (sm_{}{}), kernels {} in {:.2} s",
        ops.name,
        ops.cc.0,
        ops.cc.1,
        if ops.cached {
            "loaded from the cache"
        } else {
            "compiled"
        },
        t.elapsed().as_secs_f64()
    );
    Ok(ops)
}

fn kernels(a: &KernelsArgs) -> anyhow::Result<ExitCode> {
    use burn::backend::Autodiff;
    use firebrand_train::engine::kernel::check;
    use firebrand_train::engine::kernel::cpu::CpuOps;
    use firebrand_train::model::{ModelConfig, ModelType};

    let mut fast = open_fast(&a.device)?;
    let mut failed = 0;
    println!("\nkernel agreement: |fast - reference| / |reference| on random inputs (outputs poisoned with NaN first)");
    let checks = check::kernel_checks(
        &mut fast,
        &mut CpuOps::new(),
        a.seed,
        &firebrand_train::engine::kernel::cuda::HEAD_DIMS,
    )?;
    for c in &checks {
        failed += usize::from(!c.ok());
        println!(
            "  {} {:>9.2e} (tolerance {:.0e})  {}",
            if c.ok() { "ok  " } else { "FAIL" },
            c.rel_err,
            c.tol,
            c.name
        );
    }
    println!(
        "\nwhole step of the kernel engine against the burn engine (Autodiff<Cuda<f32>>), same weights and rows;\n  sft: the fused pass with SFT's gradient; split: log-probs at temperature 0.7 with entropies, then a random\n  gradient per target sent back (the pass DPO and GRPO take):"
    );
    let device = burn::backend::cuda::CudaDevice::new(cuda_ordinal(&a.device)?);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(a.seed);
    let base = ModelConfig {
        model_type: ModelType::Llama,
        hidden_size: 256,
        intermediate_size: 704,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        num_hidden_layers: 2,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        sliding_window: None,
        gemma: None,
        vocab_size: 2000,
        max_position_embeddings: 1024,
        tie_word_embeddings: false,
        attention_bias: false,
        head_dim: 64,
        // 1/sqrt(hidden), so each projection keeps activations at unit scale. transformers' 0.02
        // leaves a model this small with nearly uniform attention and second-order small q/k
        // gradients, where bf16 rounding alone moves them by ~15% (engine tests); a larger scale
        // makes activations grow layer by layer, which amplifies rounding the same way.
        initializer_range: 1.0 / 16.0,
        bos_token_id: None,
        eos_token_id: None,
        extra: Default::default(),
    };
    let qwen = ModelConfig {
        model_type: ModelType::Qwen2,
        hidden_size: 512,
        initializer_range: 1.0 / 512f64.sqrt(),
        num_key_value_heads: 4,
        tie_word_embeddings: true,
        attention_bias: true,
        head_dim: 128,
        ..base.clone()
    };
    let cases = [
        (
            "llama d64 GQA, packed rows with loss masks",
            base.clone(),
            check::random_rows(a.seed, 4, 256, 2000, true),
        ),
        (
            "llama d64 GQA, multiverse rows",
            base.clone(),
            check::attention_rows(&mut rng, 2, 256, true),
        ),
        (
            "qwen2 d128, biases, tied head, packed rows",
            qwen,
            check::random_rows(a.seed + 1, 4, 192, 2000, true),
        ),
    ];
    println!(
        "  (bf16 rounding alone moves gradients that are sums over many tokens: each case is also run on the\n   CPU reference emulating bf16 storage, and the CUDA engine passes when its global gradient error is\n   within twice the emulation's, or 1e-2, and its loss within 5e-3)"
    );
    for (name, config, rows) in cases {
        for how in [check::CheckGrad::Sft, check::CheckGrad::Split { temperature: 0.7 }] {
            let ops = Box::new(CudaOps::new(cuda_ordinal(&a.device)?)?);
            let r = check::model_check::<Autodiff<Cuda<f32>>>(ops, &config, &rows, &device, a.seed, how)?;
            let e = check::model_check::<Autodiff<Cuda<f32>>>(
                Box::new(CpuOps::new()),
                &config,
                &rows,
                &device,
                a.seed,
                how,
            )?;
            let (worst, err) = r.worst();
            let (eworst, eerr) = e.worst();
            let ok = r.loss_rel() <= 5e-3
                && r.logp <= (2.0 * e.logp).max(1e-2)
                && r.entropy <= (2.0 * e.entropy).max(1e-2)
                && r.global <= (2.0 * e.global).max(1e-2);
            failed += usize::from(!ok);
            let pass = match how {
                check::CheckGrad::Sft => "sft",
                check::CheckGrad::Split { .. } => "split",
            };
            println!(
                "  {} {name}, {pass}: loss rel {:.1e}, log-probs {:.1e}, entropies {:.1e}, gradients rel {:.1e} (all), worst tensor {:.1e} ({worst}); bf16 emulated on the CPU: loss rel {:.1e}, log-probs {:.1e}, gradients {:.1e} (all), worst {:.1e} ({eworst})",
                if ok { "ok  " } else { "FAIL" },
                r.loss_rel(),
                r.logp,
                r.entropy,
                r.global,
                err,
                e.loss_rel(),
                e.logp,
                e.global,
                eerr
            );
        }
    }
    if !a.no_timings {
        println!("\ntimings at the reference shapes (median ms; burn = Autodiff<Cuda<f32>>, the plain path):");
        for t in check::kernel_timings::<Autodiff<Cuda<f32>>>(&mut fast, &device)? {
            let rate = t
                .flops
                .map(|f| format!("{:>6.1} TFLOP/s", f / t.fast_ms / 1e9))
                .unwrap_or_default();
            match t.burn_ms {
                Some(b) => println!(
                    "  {:>9.3} fast {:>9.3} burn  {:>6.1}x  {rate}  {}",
                    t.fast_ms,
                    b,
                    b / t.fast_ms,
                    t.name
                ),
                None => println!(
                    "  {:>9.3} fast {:>9}       {:>6}   {rate}  {}",
                    t.fast_ms, "-", "", t.name
                ),
            }
        }
    }
    println!("\n{} failed", failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn step(a: &StepArgs) -> anyhow::Result<ExitCode> {
    use firebrand_train::model::{ModelConfig, ModelType};
    use firebrand_train::trainer::bench::{BenchMethod, method_bench};
    anyhow::ensure!(a.steps >= 1, "--steps must be at least 1");
    anyhow::ensure!(
        a.heads > 0 && a.hidden.is_multiple_of(a.heads),
        "--hidden must be a multiple of --heads"
    );
    let kernels = open_fast(&a.device)?;
    let config = ModelConfig {
        model_type: ModelType::Llama,
        hidden_size: a.hidden,
        intermediate_size: a.intermediate,
        num_attention_heads: a.heads,
        num_key_value_heads: a.kv_heads,
        num_hidden_layers: a.layers,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        sliding_window: None,
        gemma: None,
        vocab_size: a.vocab,
        max_position_embeddings: a.seq,
        tie_word_embeddings: true,
        attention_bias: false,
        head_dim: a.hidden / a.heads,
        initializer_range: 0.02,
        bos_token_id: None,
        eos_token_id: None,
        extra: Default::default(),
    };
    anyhow::ensure!(
        a.localist.is_none() || matches!(a.method, StepMethod::Sft),
        "--localist times SFT with the dial: give --method sft"
    );
    let method = match a.method {
        StepMethod::Sft => BenchMethod::Sft { localist: a.localist },
        StepMethod::Dpo => BenchMethod::Dpo,
        StepMethod::Grpo => BenchMethod::Grpo { beta: a.beta },
    };
    let reference: Option<Box<dyn firebrand_train::engine::kernel::ops::Ops>> = match method {
        BenchMethod::Grpo { beta } if beta > 0.0 => Some(Box::new(CudaOps::new(cuda_ordinal(&a.device)?)?)),
        _ => None,
    };
    let t = method_bench::<burn::backend::Autodiff<Cuda<f32>>>(
        Box::new(kernels),
        reference,
        &config,
        method,
        a.batch,
        a.seq,
        a.warmup,
        a.steps,
        a.profile,
    )?;
    let mut sorted = t.steps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let flops = firebrand_train::trainer::run::flops_per_token(&config, a.seq) * t.tokens as f64;
    println!(
        "{:?} step on the kernel engine, {} params, {} x {} tokens ({} targets): median {:.2} ms (min {:.2}, max {:.2}) over {} steps = {:.0} tokens/s, MFU {:.1}% of {} TFLOP/s; loss {:.4} -> {:.4}",
        method,
        config.num_parameters(),
        a.batch,
        a.seq,
        t.targets,
        median * 1e3,
        sorted[0] * 1e3,
        sorted[sorted.len() - 1] * 1e3,
        t.steps.len(),
        t.tokens as f64 / median,
        100.0 * flops / median / (a.peak_tflops * 1e12),
        a.peak_tflops,
        t.losses.first().copied().unwrap_or(f64::NAN),
        t.losses.last().copied().unwrap_or(f64::NAN),
    );
    if !t.profile.is_empty() {
        let total: f64 = t.profile.values().map(|v| v.0).sum();
        let mut rows: Vec<_> = t.profile.iter().collect();
        rows.sort_by(|x, y| y.1.0.total_cmp(&x.1.0));
        println!(
            "profile of one step (each operation waited for; {:.2} ms in all):",
            total * 1e3
        );
        for (name, (secs, calls)) in rows {
            println!(
                "  {:>8.3} ms {:>5.1}%  {:>4} calls  {name}",
                secs * 1e3,
                100.0 * secs / total,
                calls
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
