//! `firebrand synth mig` (information-gain selection over a dataset's labels) and `firebrand embed`
//! (label vectors from a sentence-transformers model).

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use burn::backend::{Cuda, NdArray};
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use firebrand_data::vectors::{VectorTable, read_vectors, write_vectors};
use firebrand_data::{Dataset, DatasetWriter, WriteMode};
use firebrand_synth::mig::{
    Gain, GraphOptions, LabelGraph, LabelVectors, Phi, PoolOptions, PoolReport, Selection, read_pool, select,
};
use firebrand_train::device::DeviceSpec;
use firebrand_train::encoder::SentenceEncoder;

use super::progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GainArg {
    /// The reference's linearised gain ⟨ê, φ′(z)⟩ (reproduces its picks).
    FirstOrder,
    /// The true marginal gain E(S ∪ d) − E(S).
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhiArg {
    /// φ(x) = (x + a)^b
    Pow,
    /// φ(x) = 1 − exp(−αx)
    Exp,
}

#[derive(Debug, Args)]
pub struct MigArgs {
    /// The pool: any dataset with `labels` and `score` columns.
    input: PathBuf,
    /// How many records to select.
    #[arg(long)]
    n: usize,
    /// Output dataset (same kind as the input): the selected rows in pick order, with
    /// `meta.mig = {rank, gain}`.
    #[arg(long)]
    out: PathBuf,
    /// Label vectors: a table from `firebrand embed` (or JSONL of {label, vector}).
    #[arg(long, conflicts_with = "embed_model")]
    embeddings: Option<PathBuf>,
    /// Or embed the pool's labels now with this sentence-transformers folder (the default when
    /// neither is given: all-MiniLM-L6-v2 from `scripts/models.sh`).
    #[arg(long)]
    embed_model: Option<PathBuf>,
    /// Device for --embed-model.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Only these labels count: a JSON list (the reference's valid_tag_path.json) or one per line.
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Cosine similarity at or above which labels are joined.
    #[arg(long, default_value_t = 0.9)]
    threshold: f32,
    /// Weight of a label's neighbours against itself in propagation (α).
    #[arg(long, default_value_t = 1.0)]
    prop_weight: f64,
    /// The concave φ.
    #[arg(long, value_enum, default_value_t = PhiArg::Pow)]
    phi: PhiArg,
    /// φ = (x + a)^b: a.
    #[arg(long, default_value_t = 1e-6)]
    phi_a: f64,
    /// φ = (x + a)^b: b.
    #[arg(long, default_value_t = 0.8)]
    phi_b: f64,
    /// φ = 1 − exp(−αx): α.
    #[arg(long, default_value_t = 1.0)]
    phi_alpha: f64,
    /// Divide each record's score by its number of labels.
    #[arg(long)]
    norm: bool,
    /// Ignore the score column: every record scores 1, so selection maximises label coverage alone
    /// (the paper's constant-score ablation; for data without a quality score, such as prompts).
    #[arg(long)]
    constant_score: bool,
    /// Which gain greedy maximises.
    #[arg(long, value_enum, default_value_t = GainArg::FirstOrder)]
    gain: GainArg,
    /// Records without labels or score, and labels without a vector, are errors instead of being
    /// left out and counted.
    #[arg(long)]
    strict: bool,
    /// Also write the picks as JSONL ({id, rank, gain}).
    #[arg(long)]
    picks: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// What to embed: a dataset (its distinct labels), a JSON list of strings, or a text file
    /// with one string per line.
    input: PathBuf,
    /// A sentence-transformers folder (config.json, model.safetensors, tokenizer.json, pooling);
    /// by default all-MiniLM-L6-v2 as `scripts/models.sh` fetches it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output vector table (label, vector).
    #[arg(long)]
    out: PathBuf,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Strings per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Replace an existing output.
    #[arg(long)]
    overwrite: bool,
}

/// Strings from a JSON list or a file of lines.
fn read_string_list(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON list of strings", path.display()));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn encode<B: Backend>(model: &Path, texts: &[String], batch: usize, device: &B::Device) -> anyhow::Result<VectorTable> {
    let encoder = SentenceEncoder::<B>::load(model, device)?;
    let bar = progress::bar(texts.len() as u64, "embedding", false);
    let mut data = Vec::with_capacity(texts.len() * encoder.dim());
    for chunk in texts.chunks(batch.max(1)) {
        for mut v in encoder.encode(chunk, batch)? {
            // MIG's graph takes cosine similarity as a dot product (the reference embeds with
            // normalize_embeddings=True): unit vectors whether or not the model normalises.
            if !encoder.normalizes() {
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| *x /= norm);
            }
            data.extend(v);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(VectorTable {
        labels: texts.to_vec(),
        dim: encoder.dim(),
        data,
    })
}

/// Embeds `texts` with the model at `model` on `device`.
fn embed_texts(model: &Path, texts: &[String], batch: usize, device: &str) -> anyhow::Result<VectorTable> {
    let device: DeviceSpec = device.parse().map_err(anyhow::Error::msg).context("--device")?;
    match device {
        DeviceSpec::Cpu => encode::<NdArray<f32>>(model, texts, batch, &Default::default()),
        DeviceSpec::Cuda(i) => {
            firebrand_train::device::configure_kernel_cache();
            encode::<Cuda<f32>>(model, texts, batch, &burn::backend::cuda::CudaDevice::new(i))
        }
    }
}

/// `model`, or the default embedder when it has been fetched.
fn model_or_default(model: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(m) = model {
        return Ok(m.to_path_buf());
    }
    let dir = firebrand_train::encoder::default_model_dir();
    if !dir.join("model.safetensors").exists() {
        bail!(
            "no --model given and the default embedder is not at {}\n  hint: fetch all-MiniLM-L6-v2 with `bash scripts/models.sh`, or pass --model DIR",
            dir.display()
        );
    }
    Ok(dir)
}

/// The distinct labels of a dataset, sorted.
fn dataset_labels(ds: &Dataset) -> anyhow::Result<Vec<String>> {
    // Every record's labels, scored or not.
    let all = PoolOptions {
        constant_score: true,
        ..PoolOptions::default()
    };
    let pool = read_pool(ds, &all, &mut PoolReport::default())?;
    Ok(pool.names)
}

pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    if args.out.exists() && !args.overwrite {
        bail!(
            "{}: already exists\n  hint: pass --overwrite to replace it",
            args.out.display()
        );
    }
    let texts: Vec<String> = if args.input.is_dir() {
        let ds = Dataset::open(&args.input)?;
        dataset_labels(&ds)?
    } else {
        let list = read_string_list(&args.input)?;
        let set: BTreeSet<String> = list.into_iter().collect();
        set.into_iter().collect()
    };
    if texts.is_empty() {
        bail!("{}: nothing to embed (no labels found)", args.input.display());
    }
    let start = Instant::now();
    let model = model_or_default(args.model.as_deref())?;
    let table = embed_texts(&model, &texts, args.batch, &args.device)?;
    write_vectors(&args.out, &table, args.overwrite)?;
    println!(
        "embedded {} labels ({} dims) in {:.1} s -> {}",
        table.labels.len(),
        table.dim,
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

pub fn run(args: MigArgs) -> anyhow::Result<()> {
    let phi = match args.phi {
        PhiArg::Pow => Phi::Pow {
            a: args.phi_a,
            b: args.phi_b,
        },
        PhiArg::Exp => Phi::Exp { alpha: args.phi_alpha },
    };
    phi.validate()?;
    let gain = match args.gain {
        GainArg::FirstOrder => Gain::FirstOrder,
        GainArg::Exact => Gain::Exact,
    };
    for path in std::iter::once(&args.out).chain(&args.picks) {
        if path.exists() && !args.overwrite {
            bail!(
                "{}: already exists\n  hint: pass --overwrite to replace it",
                path.display()
            );
        }
    }
    let t_read = Instant::now();
    let input = Dataset::open(&args.input)?;
    let vocabulary = match &args.vocab {
        Some(path) => Some(read_string_list(path)?.into_iter().collect::<HashSet<String>>()),
        None => None,
    };
    let options = PoolOptions {
        vocabulary,
        norm: args.norm,
        strict: args.strict,
        constant_score: args.constant_score,
    };
    let mut report = PoolReport::default();
    let mut pool = read_pool(&input, &options, &mut report)
        .with_context(|| format!("reading the pool {}", args.input.display()))?;
    let read_s = t_read.elapsed().as_secs_f64();
    if args.n > pool.len() {
        bail!(
            "asked for {} records but the pool holds {}\n  hint: lower --n",
            args.n,
            pool.len()
        );
    }

    let t_graph = Instant::now();
    let table = match &args.embeddings {
        Some(path) => read_vectors(path)?,
        None => embed_texts(
            &model_or_default(args.embed_model.as_deref())?,
            &pool.names,
            64,
            &args.device,
        )?,
    };
    let known: HashSet<&str> = table.labels.iter().map(String::as_str).collect();
    let missing = pool.missing_labels(&known);
    if !missing.is_empty() {
        if args.strict {
            bail!(
                "{} label(s) of the pool have no vector, e.g. {}\n  hint: embed them with `firebrand embed`, or drop --strict to leave them out",
                missing.len(),
                firebrand_synth::mig::describe_missing(&missing)
            );
        }
        pool.retain_labels(|l| known.contains(l), "no vector", &mut report);
    }
    let rows: Vec<Vec<f32>> = table.data.chunks(table.dim.max(1)).map(<[f32]>::to_vec).collect();
    let vectors = LabelVectors::new(table.labels, rows)?;
    let graph = LabelGraph::build(
        &pool.names,
        &vectors,
        GraphOptions {
            threshold: args.threshold,
            prop_weight: args.prop_weight,
        },
    )?;
    let graph_s = t_graph.elapsed().as_secs_f64();

    let t_select = Instant::now();
    let bar = progress::bar(args.n as u64, "selecting", false);
    let selection = select(&pool, &graph, args.n, phi, gain, |k| {
        if k % 256 == 0 {
            bar.set_position(k as u64)
        }
    })?;
    bar.finish_and_clear();
    let select_s = t_select.elapsed().as_secs_f64();

    let t_write = Instant::now();
    let written = write_selection(&input, &pool.rows, &selection, &args.out, args.overwrite)?;
    if let Some(path) = &args.picks {
        let mut text = String::new();
        for (rank, pick) in selection.picks.iter().enumerate() {
            text.push_str(
                &serde_json::json!({"id": pool.ids[pick.index], "rank": rank, "gain": pick.gain}).to_string(),
            );
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let write_s = t_write.elapsed().as_secs_f64();

    print_report(&report, &pool.len(), &graph, &selection, args.threshold, gain);
    let removed: usize = report.labels_removed.values().sum();
    if removed > pool.label_occurrences() {
        println!("warning: more label occurrences were removed ({removed}) than kept; check --vocab and the vectors");
    }
    println!("time: read {read_s:.2} s, graph {graph_s:.2} s, select {select_s:.2} s, write {write_s:.2} s");
    println!(
        "wrote {} ({} rows, version {})",
        args.out.display(),
        written.len()?,
        written.version()
    );
    Ok(())
}

fn print_report(report: &PoolReport, pooled: &usize, graph: &LabelGraph, s: &Selection, threshold: f32, gain: Gain) {
    println!("pool: {} records read, {pooled} in the pool", report.read);
    for (reason, n) in &report.left_out {
        println!("  left out, {reason}: {n}");
    }
    for (reason, n) in &report.labels_removed {
        println!("  labels removed, {reason}: {n}");
    }
    if report.emptied > 0 {
        println!(
            "  records with no label left (kept, zero information): {}",
            report.emptied
        );
    }
    let edges = graph.edges();
    println!(
        "graph: {} labels, {edges} edges at similarity >= {threshold} (mean degree {:.2})",
        graph.len(),
        if graph.is_empty() {
            0.0
        } else {
            2.0 * edges as f64 / graph.len() as f64
        }
    );
    let c = s.coverage;
    let pct = |a: usize| {
        if c.labels == 0 {
            0.0
        } else {
            100.0 * a as f64 / c.labels as f64
        }
    };
    println!(
        "selected {} ({} gain; {} gain evaluations by lazy greedy, a full scan per pick would make {})",
        s.picks.len(),
        match gain {
            Gain::FirstOrder => "first-order",
            Gain::Exact => "exact",
        },
        s.evaluations,
        full_scan_evaluations(*pooled, s.picks.len())
    );
    println!(
        "label coverage: pool {}/{} ({:.1}%), selection {}/{} ({:.1}%), reached through the graph {}/{} ({:.1}%)",
        c.pool,
        c.labels,
        pct(c.pool),
        c.selected,
        c.labels,
        pct(c.selected),
        c.reached,
        c.labels,
        pct(c.reached)
    );
    println!("information of the selection: {:.4}", s.information);
}

fn full_scan_evaluations(pool: usize, picks: usize) -> u64 {
    (0..picks).map(|k| (pool - k) as u64).sum()
}

/// Writes the selected rows of `input`, in pick order, adding `mig: {rank, gain}` to `meta`.
fn write_selection(
    input: &Dataset,
    rows: &[u64],
    selection: &Selection,
    out: &Path,
    overwrite: bool,
) -> anyhow::Result<Dataset> {
    let mode = if overwrite {
        WriteMode::Overwrite
    } else {
        WriteMode::Create
    };
    let mut writer = DatasetWriter::create(out, input.kind(), mode)?;
    for (c, chunk) in selection.picks.chunks(4096).enumerate() {
        let take: Vec<u64> = chunk.iter().map(|p| rows[p.index]).collect();
        let batch = input.take_batch(&take, None)?;
        let meta_at = batch
            .schema()
            .index_of("meta")
            .map_err(|_| anyhow::anyhow!("{}: no `meta` column", input.path().display()))?;
        let old = batch
            .column(meta_at)
            .as_any()
            .downcast_ref::<StringArray>()
            .context("`meta` is not a string column")?;
        let mut metas = Vec::with_capacity(chunk.len());
        for (i, pick) in chunk.iter().enumerate() {
            let rank = c * 4096 + i;
            let text = if old.is_null(i) { "" } else { old.value(i) };
            let mut meta: serde_json::Map<String, serde_json::Value> = if text.trim().is_empty() {
                serde_json::Map::new()
            } else {
                match serde_json::from_str(text) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => bail!(
                        "{}: row {}: `meta` is not a JSON object",
                        input.path().display(),
                        rows[pick.index]
                    ),
                }
            };
            meta.insert("mig".into(), serde_json::json!({"rank": rank, "gain": pick.gain}));
            metas.push(serde_json::Value::Object(meta).to_string());
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[meta_at] = Arc::new(StringArray::from(metas));
        let batch = RecordBatch::try_new(batch.schema(), columns)?;
        writer.write_batch(batch)?;
    }
    Ok(writer.commit()?)
}
