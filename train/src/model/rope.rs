//! Rotary position embeddings as `transformers` computes them: `inv_freq[i] = theta^(-2i/d)`
//! (changed by the model's RoPE scaling), angles `pos * inv_freq` repeated twice along the head
//! dimension, and `x * cos + rotate_half(x) * sin` with `rotate_half(x) = [-x2, x1]`; cos and sin
//! are multiplied by the scaling's attention factor (YaRN, LongRoPE).
//!
//! The scalings follow `transformers/modeling_rope_utils.py` (`_compute_*_parameters`), one
//! function here for both engines ([`Rope::frequencies`]): `linear` (position interpolation),
//! `dynamic` (NTK-aware base growth past `max_position_embeddings`), `llama3` (Llama 3.1's
//! wavelength-banded interpolation), `yarn` (as Qwen2.5/Qwen3 and DeepSeek use it) and `longrope`
//! (Phi-3's short/long factors). `dynamic` and `longrope` depend on the sequence length: as in
//! `transformers` during a full forward, the length is the batch's largest position plus one
//! (`transformers` also keeps a grown `dynamic` table across calls; we recompute per batch).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// How a model stretches RoPE past its pre-training length (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Plain RoPE.
    #[default]
    Default,
    /// Every frequency divided by `factor`.
    Linear {
        /// Interpolation factor.
        factor: f64,
    },
    /// NTK-aware: the base grows with the sequence length past `max_position_embeddings`.
    Dynamic {
        /// Scaling factor.
        factor: f64,
    },
    /// Llama 3.1: long wavelengths divided by `factor`, short ones kept, a smooth ramp between.
    Llama3 {
        /// Scaling factor (8 for Llama 3.1).
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
    },
    /// YaRN: a ramp between interpolated and extrapolated frequencies, and an attention factor.
    Yarn {
        /// Scaling factor.
        factor: f64,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
        /// Ramp boundary for extrapolation (32 when absent).
        beta_fast: f64,
        /// Ramp boundary for interpolation (1 when absent).
        beta_slow: f64,
        /// Scale of cos/sin; derived from `factor` (and `mscale`, `mscale_all_dim`) when absent.
        attention_factor: Option<f64>,
        /// DeepSeek's `mscale`.
        mscale: Option<f64>,
        /// DeepSeek's `mscale_all_dim`.
        mscale_all_dim: Option<f64>,
        /// Whether the correction range is rounded outwards (true when absent).
        truncate: bool,
    },
    /// LongRoPE (Phi-3): per-frequency factors, short ones up to the pre-training length.
    Longrope {
        /// Factors for sequences up to `original_max_position_embeddings`.
        short_factor: Vec<f64>,
        /// Factors for longer sequences.
        long_factor: Vec<f64>,
        /// Pre-training context length.
        original_max_position_embeddings: usize,
        /// `max_position_embeddings / original` when absent.
        factor: Option<f64>,
        /// Scale of cos/sin; `sqrt(1 + ln(factor) / ln(original))` when absent.
        attention_factor: Option<f64>,
    },
}

/// A `rope_scaling` problem, as a message naming the field.
pub type RopeError = String;

fn num(v: &Map<String, Value>, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

impl RopeScaling {
    /// Reads `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5). Keys the
    /// scaling does not use (`rope_theta`, `type`) are skipped; `original_max_position_embeddings`
    /// falls back to `top_original` (Phi-3 writes it beside `rope_scaling`) and then
    /// `max_position_embeddings`, as `standardize_rope_params` does.
    ///
    /// # Errors
    /// When a type is unknown or a required key is missing.
    pub fn from_hf(v: &Value, max_position_embeddings: usize, top_original: Option<usize>) -> Result<Self, RopeError> {
        let Some(m) = v.as_object() else {
            return Ok(RopeScaling::Default);
        };
        let kind = m
            .get("rope_type")
            .or_else(|| m.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let need = |key: &str| num(m, key).ok_or_else(|| format!("rope_type {kind:?} needs `{key}`"));
        let original = top_original
            .or_else(|| {
                m.get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize)
            })
            .unwrap_or(max_position_embeddings);
        Ok(match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: need("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: original,
            },
            "yarn" => RopeScaling::Yarn {
                factor: num(m, "factor").unwrap_or(max_position_embeddings as f64 / original as f64),
                original_max_position_embeddings: original,
                beta_fast: num(m, "beta_fast").filter(|b| *b != 0.0).unwrap_or(32.0),
                beta_slow: num(m, "beta_slow").filter(|b| *b != 0.0).unwrap_or(1.0),
                attention_factor: num(m, "attention_factor"),
                mscale: num(m, "mscale"),
                mscale_all_dim: num(m, "mscale_all_dim"),
                truncate: m.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            },
            "longrope" | "su" => {
                let factors = |key: &str| -> Result<Vec<f64>, RopeError> {
                    m.get(key)
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .ok_or_else(|| format!("rope_type \"longrope\" needs `{key}` (a list)"))
                };
                RopeScaling::Longrope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    original_max_position_embeddings: original,
                    factor: num(m, "factor"),
                    attention_factor: num(m, "attention_factor"),
                }
            }
            other => {
                return Err(format!(
                    "rope_type {other:?} is not supported (firebrand reads default, linear, dynamic, llama3, yarn and longrope)"
                ));
            }
        })
    }

    /// The `rope_parameters` object transformers 5 reads (`rope_scaling` in 4.x holds the same
    /// keys), with `rope_theta`.
    pub fn to_hf(&self, rope_theta: f64) -> Value {
        let mut v = serde_json::to_value(self).expect("a RoPE scaling serializes");
        let obj = v.as_object_mut().expect("tagged enums serialize as objects");
        obj.retain(|_, x| !x.is_null());
        obj.insert("rope_theta".into(), json!(rope_theta));
        v
    }

    /// The transformers name of the type.
    pub fn name(&self) -> &'static str {
        match self {
            RopeScaling::Default => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::Dynamic { .. } => "dynamic",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::Yarn { .. } => "yarn",
            RopeScaling::Longrope { .. } => "longrope",
        }
    }
}

/// The RoPE of one model: everything [`Rope::frequencies`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    /// Per-head width (all of it rotated).
    pub head_dim: usize,
    /// Base.
    pub theta: f64,
    /// Scaling.
    pub scaling: RopeScaling,
    /// The model's `max_position_embeddings`.
    pub max_position_embeddings: usize,
}

/// Rotary frequencies for one batch and the factor cos and sin are multiplied by.
#[derive(Debug, Clone, PartialEq)]
pub struct Frequencies {
    /// `head_dim / 2` inverse frequencies.
    pub inv_freq: Vec<f32>,
    /// Multiplies cos and sin (so q·k by its square); 1 except for YaRN and LongRoPE.
    pub attention_factor: f64,
}

fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl Rope {
    /// Whether the frequencies change with the sequence length, and past which length.
    pub fn length_limit(&self) -> Option<usize> {
        match &self.scaling {
            RopeScaling::Dynamic { .. } => Some(self.max_position_embeddings),
            RopeScaling::Longrope {
                original_max_position_embeddings,
                ..
            } => Some(*original_max_position_embeddings),
            _ => None,
        }
    }

    /// The frequencies for a batch whose largest position is `seq_len - 1` (only `dynamic` and
    /// `longrope` look at it; 0 means "no longer than the pre-training length").
    pub fn frequencies(&self, seq_len: usize) -> Frequencies {
        let d = self.head_dim as f64;
        let half = self.head_dim / 2;
        // theta^(2i/d), computed in f64 (transformers computes in f32; the difference is below
        // f32 rounding of the result).
        let plain = |base: f64| -> Vec<f64> { (0..half).map(|i| 1.0 / base.powf(2.0 * i as f64 / d)).collect() };
        let (inv, factor): (Vec<f64>, f64) = match &self.scaling {
            RopeScaling::Default => (plain(self.theta), 1.0),
            RopeScaling::Linear { factor } => (plain(self.theta).into_iter().map(|f| f / factor).collect(), 1.0),
            RopeScaling::Dynamic { factor } => {
                let max = self.max_position_embeddings as f64;
                let len = (seq_len as f64).max(max);
                let base = self.theta * ((factor * len / max) - (factor - 1.0)).powf(d / (d - 2.0));
                (plain(base), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                let inv = plain(self.theta)
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen > low_wavelen {
                            f / factor
                        } else if wavelen < high_wavelen {
                            f
                        } else {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect();
                (inv, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                attention_factor,
                mscale,
                mscale_all_dim,
                truncate,
            } => {
                let af = attention_factor.unwrap_or_else(|| match (mscale, mscale_all_dim) {
                    (Some(m), Some(a)) if *m != 0.0 && *a != 0.0 => yarn_mscale(*factor, *m) / yarn_mscale(*factor, *a),
                    _ => yarn_mscale(*factor, 1.0),
                });
                let orig = *original_max_position_embeddings as f64;
                let correction = |rotations: f64| {
                    d * (orig / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * self.theta.ln())
                };
                let (mut low, mut high) = (correction(*beta_fast), correction(*beta_slow));
                if *truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                if low == high {
                    high += 0.001;
                }
                let inv = plain(self.theta)
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation = 1.0 - ramp;
                        (f / factor) * (1.0 - extrapolation) + f * extrapolation
                    })
                    .collect();
                (inv, af)
            }
            RopeScaling::Longrope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                factor,
                attention_factor,
            } => {
                let orig = *original_max_position_embeddings as f64;
                let factor = factor.unwrap_or(self.max_position_embeddings as f64 / orig);
                let af = attention_factor.unwrap_or(if factor <= 1.0 {
                    1.0
                } else {
                    (1.0 + factor.ln() / orig.ln()).sqrt()
                });
                let ext = if seq_len > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                let inv = plain(self.theta)
                    .into_iter()
                    .enumerate()
                    .map(|(i, f)| f / ext.get(i).copied().unwrap_or(1.0))
                    .collect();
                (inv, af)
            }
        };
        Frequencies {
            inv_freq: inv.into_iter().map(|f| f as f32).collect(),
            attention_factor: factor,
        }
    }
}

/// Cosines and sines of the rotary angles of every position, times the attention factor.
///
/// # Shapes
/// `position_ids`: `[batch, seq]`; returns two `[batch, 1, seq, head_dim]` tensors.
pub fn angles<B: Backend>(position_ids: Tensor<B, 2, Int>, freq: &Frequencies) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let device = position_ids.device();
    let [b, t] = position_ids.dims();
    let half = freq.inv_freq.len();
    let inv_freq = Tensor::<B, 1>::from_floats(freq.inv_freq.as_slice(), &device).reshape([1, 1, half]);
    let pos = position_ids.float().reshape([b, t, 1]);
    let freqs = pos * inv_freq; // [b, t, half]
    let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, t, 2 * half]);
    let (cos, sin) = (emb.clone().cos(), emb.sin());
    if freq.attention_factor == 1.0 {
        (cos, sin)
    } else {
        let f = freq.attention_factor;
        (cos.mul_scalar(f), sin.mul_scalar(f))
    }
}

/// Rotates queries or keys.
///
/// # Shapes
/// `x`: `[batch, heads, seq, head_dim]`; `cos`, `sin`: `[batch, 1, seq, head_dim]`.
pub fn apply<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> Rope {
        Rope {
            head_dim: 128,
            theta: 500_000.0,
            scaling,
            max_position_embeddings: 131_072,
        }
    }

    #[test]
    fn llama3_keeps_short_wavelengths_and_divides_long_ones() {
        let plain = rope(RopeScaling::Default).frequencies(0).inv_freq;
        let scaled = rope(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        })
        .frequencies(0)
        .inv_freq;
        assert_eq!(scaled[0], plain[0]); // wavelength 2π, far below 8192 / 4
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() <= 1e-6 * plain[last]);
        // Between the bands the factor is strictly between 1 and 8.
        let mid = (0..plain.len())
            .find(|&i| {
                let w = 2.0 * std::f64::consts::PI / plain[i] as f64;
                w > 2048.0 && w < 8192.0
            })
            .unwrap();
        let ratio = plain[mid] / scaled[mid];
        assert!(ratio > 1.0 && ratio < 8.0, "{ratio}");
    }

    #[test]
    fn dynamic_and_longrope_change_only_past_their_limits() {
        let dynamic = rope(RopeScaling::Dynamic { factor: 2.0 });
        assert_eq!(dynamic.frequencies(1000), rope(RopeScaling::Default).frequencies(0));
        assert!(dynamic.frequencies(200_000).inv_freq[10] < dynamic.frequencies(0).inv_freq[10]);
        let long = rope(RopeScaling::Longrope {
            short_factor: vec![2.0; 64],
            long_factor: vec![4.0; 64],
            original_max_position_embeddings: 4096,
            factor: None,
            attention_factor: None,
        });
        let (short, longer) = (long.frequencies(4096), long.frequencies(4097));
        assert!((short.inv_freq[3] / longer.inv_freq[3] - 2.0).abs() < 1e-5);
        // factor = 131072 / 4096 = 32: sqrt(1 + ln 32 / ln 4096)
        assert!((short.attention_factor - (1.0 + 32f64.ln() / 4096f64.ln()).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn hf_objects_of_both_transformers_versions_read_and_write_back() {
        let v4 = serde_json::json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768});
        let y = RopeScaling::from_hf(&v4, 131_072, None).unwrap();
        assert!(matches!(
            y,
            RopeScaling::Yarn {
                factor: 4.0,
                truncate: true,
                ..
            }
        ));
        let back = RopeScaling::from_hf(&y.to_hf(1e6), 131_072, None).unwrap();
        assert_eq!(back, y);
        // yarn's default attention factor is 0.1 ln(4) + 1.
        let f = rope(y).frequencies(0).attention_factor;
        assert!((f - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-12);
        let err = RopeScaling::from_hf(&serde_json::json!({"rope_type": "mrope"}), 1, None).unwrap_err();
        assert!(err.contains("\"mrope\""), "{err}");
        let err =
            RopeScaling::from_hf(&serde_json::json!({"rope_type": "llama3", "factor": 8.0}), 1, None).unwrap_err();
        assert!(err.contains("low_freq_factor"), "{err}");
    }
}
