//! A local model (checkpoint, run or Hugging Face folder) as a synthesizer [`Generator`]:
//! conversations rendered through its chat template and answered in batches by the sampler.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use burn::backend::{Cuda, NdArray};
use burn::tensor::backend::Backend;
use firebrand_data::records::Message;
use firebrand_synth::generator::{Answers, GenParams, Generator};
use firebrand_train::device::DeviceSpec;
use firebrand_train::generate::{SamplingParams, generate_text};

/// Rows per sampler batch: bounds memory whatever the caller hands over.
const BATCH_ROWS: usize = 64;

struct LocalGenerator<B: Backend> {
    model: Mutex<firebrand_train::Decoder<B>>,
    tokenizer: firebrand_data::tokenizer::Tokenizer,
    template: firebrand_data::template::Template,
    stop_token_ids: Vec<u32>,
    calls: AtomicU64,
}

impl<B: Backend> Generator for LocalGenerator<B> {
    fn generate(&self, conversations: &[Vec<Message>], params: &GenParams) -> Vec<Answers> {
        let n = params.n.max(1);
        // Each conversation is repeated n times; rows have their own RNG, so the copies differ.
        let prompts: Result<Vec<String>, _> = conversations
            .iter()
            .map(|c| self.template.generation_prompt(c))
            .collect();
        let prompts: Vec<String> = match prompts {
            Ok(p) => p.into_iter().flat_map(|p| std::iter::repeat_n(p, n)).collect(),
            Err(e) => return conversations.iter().map(|_| Err(e.to_string())).collect(),
        };
        // A new seed per call, so a retried request is a new sample.
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let sampling = SamplingParams {
            max_new_tokens: params.max_tokens,
            temperature: params.temperature,
            top_p: params.top_p,
            stop_token_ids: self.stop_token_ids.clone(),
            seed: params.seed.wrapping_add(call.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ..Default::default()
        };
        let texts: Result<Vec<String>, String> = match self.model.lock() {
            Err(_) => Err("the model lock is poisoned".to_string()),
            Ok(model) => prompts.chunks(BATCH_ROWS).enumerate().try_fold(
                Vec::with_capacity(prompts.len()),
                |mut out, (b, chunk)| {
                    let p = SamplingParams {
                        seed: sampling.seed.wrapping_add(b as u64),
                        ..sampling.clone()
                    };
                    let done = generate_text(&model, &self.tokenizer, chunk, &p).map_err(|e| e.to_string())?;
                    out.extend(done.into_iter().map(|c| c.text));
                    Ok(out)
                },
            ),
        };
        match texts {
            Ok(texts) => texts.chunks(n).map(|c| Ok(c.to_vec())).collect(),
            Err(e) => conversations.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

fn load<B: Backend>(path: &Path, device: &B::Device) -> anyhow::Result<LocalGenerator<B>> {
    let trained = firebrand_train::trained::load_trained::<B>(path, device)?;
    let Some(tok_path) = &trained.tokenizer else {
        bail!("{}: no tokenizer is known for this model", path.display());
    };
    let tokenizer = firebrand_data::tokenizer::load(tok_path)?;
    let template = trained.template(&tokenizer)?;
    template.check(&tokenizer)?;
    let stop_token_ids = trained.stop_token_ids(Some(&template), &tokenizer);
    Ok(LocalGenerator {
        model: Mutex::new(trained.model),
        tokenizer,
        template,
        stop_token_ids,
        calls: AtomicU64::new(0),
    })
}

/// Loads the model at `path` on `device` (`cpu` or `cuda[:N]`) as a generator.
pub fn local_generator(path: &Path, device: &str) -> anyhow::Result<Box<dyn Generator>> {
    let device: DeviceSpec = device.parse().map_err(anyhow::Error::msg).context("--device")?;
    Ok(match device {
        DeviceSpec::Cpu => Box::new(load::<NdArray<f32>>(path, &Default::default())?),
        DeviceSpec::Cuda(i) => {
            firebrand_train::device::configure_kernel_cache();
            Box::new(load::<Cuda<f32>>(path, &burn::backend::cuda::CudaDevice::new(i))?)
        }
    })
}

/// Where answers come from: an OpenAI-compatible endpoint, or a local model through the sampler.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// OpenAI-compatible endpoint (base URL such as http://localhost:8000/v1).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// With --endpoint: the served model's name; otherwise a local checkpoint, run or HF folder.
    #[arg(long)]
    pub model: Option<String>,
    /// Environment variable holding the endpoint's API key (never printed).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub key_env: String,
    /// Requests in flight at once (endpoint).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds per request before it is retried (endpoint).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// With a local model: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Answers sampled per prompt (per prompt and passage condition for `synth prefs`).
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
}

impl ModelArgs {
    /// The sampling these flags ask for (nucleus 0.95), from `seed`.
    pub fn params(&self, seed: u64) -> GenParams {
        GenParams {
            n: self.n.max(1),
            temperature: self.temperature,
            top_p: 0.95,
            max_tokens: self.max_tokens,
            seed,
        }
    }

    /// The generator these flags name; `what` is the flag that needs it, for the error message.
    pub fn generator(&self, what: &str) -> anyhow::Result<Box<dyn Generator>> {
        use firebrand_synth::generator::openai::{OpenAiConfig, OpenAiGenerator};
        match (&self.endpoint, &self.model) {
            (Some(url), Some(name)) => Ok(Box::new(
                OpenAiGenerator::new(OpenAiConfig {
                    key_env: self.key_env.clone(),
                    concurrency: self.concurrency,
                    timeout: std::time::Duration::from_secs(self.timeout),
                    ..OpenAiConfig::new(url.clone(), name.clone())
                })
                .map_err(anyhow::Error::msg)
                .context("--endpoint")?,
            )),
            (Some(_), None) => bail!("--endpoint needs --model NAME (the model the server serves)"),
            (None, Some(path)) => local_generator(Path::new(path), &self.device),
            (None, None) => bail!("{what} needs --endpoint URL --model NAME, or --model DIR (a local checkpoint)"),
        }
    }
}
