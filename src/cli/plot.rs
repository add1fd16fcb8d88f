//! `firebrand plot RUN [RUN ...]`: a run's metrics as one PNG, with runs overlaid for comparison.
//!
//! Four panels from `RUN/metrics.jsonl`: training loss (with eval loss as points), learning rate,
//! gradient norm and tokens/s, against the optimizer step. A resumed run may have logged some steps
//! twice (those after its last checkpoint, before it was killed); the last record of a step wins,
//! which is the one the surviving run produced. The font is embedded (DejaVu Sans, see
//! `assets/fonts/`), so plots render on machines without fontconfig.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run folders (checkpoints/RUN) or metrics.jsonl files; several are overlaid.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output PNG (default: RUN/metrics.png of the first run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 1400)]
    width: u32,
    #[arg(long, default_value_t = 900)]
    height: u32,
}

/// One run's curves: step → value for each metric.
#[derive(Debug, Default, PartialEq)]
pub struct Curves {
    /// The run's name in the legend.
    pub name: String,
    /// Metric name → (step → value).
    pub series: BTreeMap<String, BTreeMap<u64, f64>>,
}

/// Reads `metrics.jsonl` text: every numeric field of a line becomes a point at its `step`.
///
/// # Errors
/// A line that is not a JSON object with a `step`.
pub fn read_curves(name: &str, text: &str, path: &Path) -> anyhow::Result<Curves> {
    let mut curves = Curves {
        name: name.to_string(),
        ..Default::default()
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        let Some(step) = v.get("step").and_then(serde_json::Value::as_u64) else {
            bail!("{}: line {}: no `step`", path.display(), i + 1);
        };
        for (key, value) in v.as_object().into_iter().flatten() {
            if let Some(x) = value.as_f64().filter(|x| x.is_finite() && key != "step") {
                curves.series.entry(key.clone()).or_default().insert(step, x);
            }
        }
    }
    Ok(curves)
}

pub fn run(a: PlotArgs) -> anyhow::Result<ExitCode> {
    let mut runs = Vec::new();
    for r in &a.runs {
        let path = if r.is_dir() { r.join("metrics.jsonl") } else { r.clone() };
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}\n  hint: give a run folder such as checkpoints/sft-tiny",
                path.display()
            )
        })?;
        let name = if r.is_dir() { r } else { r.parent().unwrap_or(r) };
        let name = name
            .file_name()
            .map_or_else(|| r.display().to_string(), |n| n.to_string_lossy().into_owned());
        runs.push(read_curves(&name, &text, &path)?);
    }
    let out = a.out.clone().unwrap_or_else(|| {
        let first = &a.runs[0];
        if first.is_dir() {
            first.join("metrics.png")
        } else {
            first.with_extension("png")
        }
    });
    draw(&runs, &out, (a.width, a.height))?;
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Panels: (title, metric, overlaid points metric, log scale).
const PANELS: [(&str, &str, Option<&str>, bool); 4] = [
    ("loss (points: eval)", "loss", Some("eval/loss"), false),
    ("learning rate", "lr", None, false),
    ("gradient norm", "grad_norm", None, true),
    ("tokens / s", "tokens_per_s", None, false),
];

/// GRPO runs' panels: what its curves are read for.
const GRPO_PANELS: [(&str, &str, Option<&str>, bool); 4] = [
    (
        "reward (points: greedy eval/reward)",
        "reward",
        Some("eval/reward"),
        false,
    ),
    ("entropy", "entropy", None, false),
    ("completion length", "completions/mean_length", None, false),
    (
        "groups without signal (zero reward std)",
        "frac_reward_zero_std",
        None,
        false,
    ),
];

/// GRPO's panels when any run logs rewards, else the loss panels.
fn panels(runs: &[Curves]) -> [(&'static str, &'static str, Option<&'static str>, bool); 4] {
    if runs.iter().any(|r| r.series.contains_key("reward")) {
        GRPO_PANELS
    } else {
        PANELS
    }
}

fn draw(runs: &[Curves], out: &Path, size: (u32, u32)) -> anyhow::Result<()> {
    // A second registration (tests draw several plots in one process) fails harmlessly.
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let root = BitMapBackend::new(out, size).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", out.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((2, 2));
    for (area, (title, key, points, log)) in areas.iter().zip(panels(runs)) {
        let lines: Vec<(&Curves, Vec<(f64, f64)>)> = runs
            .iter()
            .map(|r| {
                let s = r
                    .series
                    .get(key)
                    .map(|m| m.iter().map(|(&s, &v)| (s as f64, v)).collect());
                (r, s.unwrap_or_default())
            })
            .collect();
        let dots: Vec<Vec<(f64, f64)>> = runs
            .iter()
            .map(|r| {
                points
                    .and_then(|p| r.series.get(p))
                    .map(|m| m.iter().map(|(&s, &v)| (s as f64, v)).collect())
                    .unwrap_or_default()
            })
            .collect();
        let all = lines.iter().flat_map(|(_, v)| v.iter()).chain(dots.iter().flatten());
        let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in all {
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !y0.is_finite() {
            area.titled(&format!("{title}: no data"), ("sans-serif", 18))
                .map_err(|e| err(&e))?;
            continue;
        }
        let pad = ((y1 - y0) * 0.05).max(y1.abs() * 1e-3).max(1e-12);
        let mut builder = ChartBuilder::on(area);
        builder
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64);
        macro_rules! finish {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("step")
                    .x_label_formatter(&|x| format!("{x:.0}"))
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (i, ((run, line), dots)) in lines.iter().zip(&dots).enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    chart
                        .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
                        .map_err(|e| err(&e))?
                        .label(run.name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                    chart
                        .draw_series(dots.iter().map(|&p| Circle::new(p, 4, color.filled())))
                        .map_err(|e| err(&e))?;
                }
                if runs.len() > 1 {
                    chart
                        .configure_series_labels()
                        .background_style(WHITE.mix(0.8))
                        .border_style(BLACK)
                        .label_font(("sans-serif", 13))
                        .draw()
                        .map_err(|e| err(&e))?;
                }
            }};
        }
        if log && y0 > 0.0 {
            finish!(
                builder
                    .build_cartesian_2d(0f64..x1, (y0 * 0.9..y1 * 1.1).log_scale())
                    .map_err(|e| err(&e))?
            );
        } else {
            finish!(
                builder
                    .build_cartesian_2d(0f64..x1, (y0 - pad)..(y1 + pad))
                    .map_err(|e| err(&e))?
            );
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_record_of_a_step_wins_and_eval_is_its_own_series() {
        let text = r#"{"step":1,"loss":3.0,"lr":0.1,"mfu":null}
{"step":2,"loss":2.5,"lr":0.2}
{"step":2,"loss":2.4,"lr":0.2}
{"step":2,"eval/loss":2.7}
"#;
        let c = read_curves("r", text, Path::new("m.jsonl")).unwrap();
        assert_eq!(c.series["loss"], BTreeMap::from([(1, 3.0), (2, 2.4)]));
        assert_eq!(c.series["eval/loss"], BTreeMap::from([(2, 2.7)]));
        assert!(!c.series.contains_key("mfu"));
        assert_eq!(panels(std::slice::from_ref(&c))[0].1, "loss");
        let grpo = read_curves("g", "{\"step\":1,\"loss\":0.0,\"reward\":0.5}\n", Path::new("m.jsonl")).unwrap();
        assert_eq!(panels(&[c, grpo])[0].1, "reward", "GRPO runs plot their reward");
        let err = read_curves("r", "{\"loss\":1}\n", Path::new("m.jsonl")).unwrap_err();
        assert!(err.to_string().contains("line 1: no `step`"), "{err}");
    }

    #[test]
    fn draws_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (1..=30)
            .map(|s| {
                format!(
                    "{{\"step\":{s},\"loss\":{},\"lr\":0.001,\"grad_norm\":1.5,\"tokens_per_s\":900}}\n",
                    5.0 / s as f64
                )
            })
            .collect();
        let c = read_curves("a", &text, Path::new("m.jsonl")).unwrap();
        let out = dir.path().join("m.png");
        draw(&[c], &out, (600, 400)).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
