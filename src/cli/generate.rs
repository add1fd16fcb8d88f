//! `firebrand generate MODEL --prompt ...`: sample from a checkpoint, a run or a Hugging Face
//! folder with the library sampler (`firebrand_train::generate`).
//!
//! Prompts are rendered as a user turn through the model's chat template and end with the
//! assistant header, so a chat model answers as it was trained to; `--template raw` sends the text
//! as it is, and `--template NAME` picks one (chatml, llama3, plain, model). The template is
//! otherwise `Trained::template`: the recipe's `data.template` for checkpoints; for a Hugging Face
//! folder its own Jinja `chat_template` (a built-in one when it is that template's Jinja, as
//! `firebrand export` writes), else guessed from the tokenizer's special tokens.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::backend::{Cuda, NdArray};
use burn::tensor::backend::Backend;
use clap::Args;
use firebrand_data::records::{Message, Role};
use firebrand_data::template::Template;
use firebrand_data::tokenizer;
use firebrand_train::device::DeviceSpec;
use firebrand_train::generate::{Completion, Finish, SamplingParams, generate};
use firebrand_train::trained::{Trained, load_trained};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// A checkpoint (checkpoints/RUN/step-N), a run (its latest checkpoint) or a Hugging Face folder.
    model: PathBuf,
    /// A prompt; repeat for a batch.
    #[arg(long)]
    prompt: Vec<String>,
    /// A file with one prompt per line (added after --prompt).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// A system message put before each prompt.
    #[arg(long)]
    system: Option<String>,
    /// Chat template: chatml, llama3, plain, model (the folder's Jinja), or raw (no template). Default: the model's.
    #[arg(long)]
    template: Option<String>,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// A text that ends a completion; repeatable.
    #[arg(long)]
    stop: Vec<String>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompts per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object per prompt (text, tokens, logprobs, finish) instead of the text.
    #[arg(long)]
    json: bool,
    /// Multiverse parallel generation: fork at each `</Goal>` into one path per outline, decode
    /// the paths as a batch and join them for the conclusion (prompts run one at a time;
    /// --max-new-tokens counts the critical path; --stop strings are not applied).
    #[arg(long)]
    parallel: bool,
    /// With --parallel: most paths per fork.
    #[arg(long, default_value_t = 16)]
    max_paths: usize,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<ExitCode> {
    let device: DeviceSpec = a.device.parse().map_err(anyhow::Error::msg).context("--device")?;
    match device {
        DeviceSpec::Cpu => run_on::<NdArray<f32>>(&a, &Default::default()),
        DeviceSpec::Cuda(i) => {
            firebrand_train::device::configure_kernel_cache();
            run_on::<Cuda<f32>>(&a, &burn::backend::cuda::CudaDevice::new(i))
        }
    }
}

fn run_on<B: Backend>(a: &GenerateArgs, device: &B::Device) -> anyhow::Result<ExitCode> {
    let mut prompts = a.prompt.clone();
    if let Some(path) = &a.prompts {
        let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if !line.trim().is_empty() {
                prompts.push(line);
            }
        }
    }
    if prompts.is_empty() {
        bail!("no prompt given\n  hint: --prompt \"What is firebrand?\" (repeatable) or --prompts FILE");
    }
    let trained: Trained<B> = load_trained(&a.model, device)?;
    let Some(tok_path) = &trained.tokenizer else {
        bail!(
            "{}: no tokenizer is known for this model\n  hint: train with data.tokenizer set, or use a Hugging Face folder with tokenizer.json",
            a.model.display()
        );
    };
    let tok = tokenizer::load(tok_path)?;
    let template = match a.template.as_deref() {
        Some("raw") => None,
        Some(name) => Some(Template::resolve(Some(name), Some(tok_path)).context("--template")?),
        None => Some(trained.template(&tok)?),
    };
    if let Some(t) = &template {
        t.check(&tok)?;
    }
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| match &template {
            None => Ok(p.clone()),
            Some(t) => {
                let mut messages = Vec::new();
                if let Some(s) = &a.system {
                    messages.push(Message::new(Role::System, s.as_str()));
                }
                messages.push(Message::new(Role::User, p.as_str()));
                t.generation_prompt(&messages).context("rendering the prompt")
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let stop_token_ids = trained.stop_token_ids(template.as_ref(), &tok);
    let params = SamplingParams {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        stop: a.stop.clone(),
        stop_token_ids,
        seed: a.seed,
    };
    let encoded: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            tok.encode(t.as_str(), false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| anyhow::anyhow!("tokenizing a prompt: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut generated = 0;
    if a.parallel {
        use firebrand_train::generate::parallel::{ParallelParams, generate_parallel};
        let pp = ParallelParams {
            sampling: params.clone(),
            max_paths: a.max_paths,
        };
        for (i, prompt) in encoded.iter().enumerate() {
            let c = generate_parallel(&trained.model, &tok, prompt, &pp)?;
            generated += c.tokens.len();
            let paths: Vec<usize> = c.forks.iter().map(|f| f.paths.len()).collect();
            eprintln!(
                "prompt {}: {} tokens, critical path {}, {} forward passes, forks with {paths:?} paths",
                i + 1,
                c.tokens.len(),
                c.critical_path,
                c.forward_passes
            );
            let as_completion = Completion {
                text: c.text,
                tokens: c.tokens,
                logprobs: Vec::new(),
                finish: c.finish,
            };
            print_completion(&mut out, a.json, prompts.len(), i, &prompts[i], &as_completion)?;
        }
    }
    for (b, chunk) in encoded.chunks(a.batch_size.max(1)).enumerate().filter(|_| !a.parallel) {
        let completions = generate(&trained.model, &tok, chunk, &params)?;
        for (j, c) in completions.iter().enumerate() {
            let i = b * a.batch_size.max(1) + j;
            generated += c.tokens.len();
            print_completion(&mut out, a.json, prompts.len(), i, &prompts[i], c)?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "generated {generated} tokens for {} prompt(s) in {secs:.2} s ({:.0} tokens/s) on {}",
        prompts.len(),
        generated as f64 / secs.max(1e-9),
        a.device
    );
    Ok(ExitCode::SUCCESS)
}

fn print_completion(
    out: &mut impl Write,
    json: bool,
    total: usize,
    i: usize,
    prompt: &str,
    c: &Completion,
) -> anyhow::Result<()> {
    let finish = match &c.finish {
        Finish::StopToken(_) => "stop_token",
        Finish::StopString(_) => "stop_string",
        Finish::Length => "length",
    };
    let written = if json {
        let v = serde_json::json!({
            "prompt": prompt, "text": c.text, "finish": finish, "tokens": c.tokens, "logprobs": c.logprobs,
        });
        writeln!(out, "{v}")
    } else if total == 1 {
        writeln!(out, "{}", c.text)
    } else {
        writeln!(out, "### {}: {prompt}\n{}\n", i + 1, c.text)
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
