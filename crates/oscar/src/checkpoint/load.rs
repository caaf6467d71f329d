//! Building a model from a checkpoint: read the tensors (any supported format), apply the key
//! rules, infer what the config leaves open, build structurally, and report missing and
//! unexpected keys. A missing key is an error unless the caller asked for a fresh head.

use super::keys::{normalize_keys, HeadKind};
use super::torch_pickle::{read_torch_file, sniff};
use crate::config::OscarConfig;
use crate::error::{Error, Result};
use crate::model::{
    BertForImageCaptioning, BertImgForPreTraining, BertImgModel, ImageBertForMultipleChoice,
    ImageBertForSequenceClassification,
};
use crate::nn::int8::Precision;
use crate::nn::params::FreshPolicy;
use crate::nn::{Linear, LoadReport, ParamBuilder, Params};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A checkpoint's tensors (CPU, original dtypes and keys) with what sits next to them.
pub struct Checkpoint {
    /// The weights file that was read.
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    /// `config.json` from the directory (or next to the file), when there is one.
    pub config: Option<OscarConfig>,
    /// `vocab.txt` from the directory (or next to the file), when there is one.
    pub vocab: Option<PathBuf>,
    /// `safetensors`, `torch-zip` or `torch-legacy`.
    pub format: &'static str,
}

/// Reads a checkpoint: a `save_pretrained` directory (`model.safetensors` preferred, else
/// `pytorch_model.bin`) or a single weights file of any supported format.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let (file, dir) = if path.is_dir() {
        let st = path.join("model.safetensors");
        let bin = path.join("pytorch_model.bin");
        let f = if st.exists() {
            st
        } else if bin.exists() {
            bin
        } else {
            return Err(Error::bad_file(
                path,
                "directory has neither model.safetensors nor pytorch_model.bin",
            ));
        };
        (f, path.to_path_buf())
    } else if path.exists() {
        (
            path.to_path_buf(),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    } else {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    };
    let (tensors, format) = read_weights(&file)?;
    let cfg_path = dir.join("config.json");
    let config = if cfg_path.exists() {
        Some(OscarConfig::from_file(&cfg_path)?)
    } else {
        None
    };
    let vocab = Some(dir.join("vocab.txt")).filter(|v| v.exists());
    Ok(Checkpoint {
        path: file,
        tensors,
        config,
        vocab,
        format,
    })
}

/// An int8 weight written by `save_pretrained_int8` (`KEY` I8 `[out, in]`, `KEY_scale` F32
/// `[out]` and, where its groups took finer steps, `KEY_exponent` U8 `[out, ceil(in / 32)]`;
/// the companions are removed from `map`) as the f32 `q · scale · 2^-exponent`.
fn dequantize(
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
    map: &mut HashMap<String, Tensor>,
) -> std::result::Result<Tensor, String> {
    use crate::nn::int8::kernel::{dequantize_weight, max_exponent, WEIGHT_GROUP};
    let scale_key = format!("{name}_scale");
    let &[n, k] = view.shape() else {
        return Err(format!(
            "int8 tensor `{name}` has shape {:?}, expected [out, in]",
            view.shape()
        ));
    };
    let scale = map
        .remove(&scale_key)
        .ok_or_else(|| format!("int8 tensor `{name}` has no `{scale_key}` beside it"))?;
    let scale = scale
        .to_dtype(candle_core::DType::F32)
        .and_then(|s| s.flatten_all()?.to_vec1::<f32>())
        .map_err(|e| format!("`{scale_key}`: {e}"))?;
    if scale.len() != n {
        return Err(format!(
            "`{scale_key}` holds {} scales for the {n} rows of `{name}`",
            scale.len()
        ));
    }
    let groups = k.div_ceil(WEIGHT_GROUP);
    let exp_key = format!("{name}_exponent");
    let exps = match map.remove(&exp_key) {
        None => vec![0u8; n * groups],
        Some(t) => {
            if t.dtype() != candle_core::DType::U8 || t.dims() != [n, groups] {
                return Err(format!(
                    "`{exp_key}` is {:?} {:?}, expected U8 [{n}, {groups}] (one exponent per \
                     channel and group of {WEIGHT_GROUP} inputs of `{name}`)",
                    t.dtype(),
                    t.dims()
                ));
            }
            let e = t
                .flatten_all()
                .and_then(|t| t.to_vec1::<u8>())
                .map_err(|e| format!("`{exp_key}`: {e}"))?;
            let most = max_exponent(k);
            if let Some(bad) = e.iter().position(|&v| v > most) {
                return Err(format!(
                    "`{exp_key}` holds {} at channel {}, group {}: at most {most} for {k} inputs",
                    e[bad],
                    bad / groups,
                    bad % groups
                ));
            }
            e
        }
    };
    let w: Vec<f32> = view
        .data()
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let (j, kk) = (i / k.max(1), i % k.max(1));
            dequantize_weight(b as i8, scale[j], exps[j * groups + kk / WEIGHT_GROUP])
        })
        .collect();
    Tensor::from_vec(w, (n, k), &Device::Cpu).map_err(|e| format!("`{name}`: {e}"))
}

fn read_weights(file: &Path) -> Result<(HashMap<String, Tensor>, &'static str)> {
    if let Some(fmt) = sniff(file)? {
        let list = read_torch_file(file)?;
        let mut map = HashMap::with_capacity(list.len());
        for (k, v) in list {
            if map.insert(k.clone(), v).is_some() {
                return Err(Error::bad_file(file, format!("key `{k}` appears twice")));
            }
        }
        let name = match fmt {
            super::torch_pickle::TorchFormat::Zip => "torch-zip",
            super::torch_pickle::TorchFormat::Legacy => "torch-legacy",
        };
        return Ok((map, name));
    }
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
        Error::bad_file(file, format!("not a checkpoint: neither a PyTorch file (zip or legacy) nor valid safetensors ({e})"))
    })?;
    let mut map = HashMap::new();
    let mut int8 = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() == safetensors::Dtype::I8 {
            int8.push((name, view));
            continue;
        }
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
            .map_err(|e| Error::bad_file(file, format!("tensor `{name}`: {e}")))?;
        map.insert(name, t);
    }
    for (name, view) in int8 {
        let t = dequantize(&name, &view, &mut map).map_err(|e| Error::bad_file(file, e))?;
        map.insert(name, t);
    }
    if map.is_empty() {
        return Err(Error::bad_file(
            file,
            "the safetensors file holds no tensors",
        ));
    }
    Ok((map, "safetensors"))
}

/// A model that can be built from parameters.
pub trait Buildable: Sized {
    const HEAD: HeadKind;
    fn build(pb: &ParamBuilder, cfg: &OscarConfig) -> candle_core::Result<Self>;
    /// Whether `cls.predictions.decoder.weight` is the word-embedding matrix.
    fn tied(_cfg: &OscarConfig) -> bool {
        false
    }
    /// Key prefixes of the task head, created fresh when the caller asks for a new head.
    fn head_prefixes() -> &'static [&'static str];
    /// Every `Linear` layer of the backbone and the head, for int8 inference.
    fn linears(&mut self) -> Vec<&mut Linear>;
}

/// Switches every `Linear` layer of `loaded` to dynamic int8 and drops their f32 weights from
/// its parameters, so they are freed (a tied word-prediction matrix stays, as the word
/// embedding). The model is then for inference only.
pub fn quantize<M: Buildable>(loaded: &mut Loaded<M>) -> Result<()> {
    quantize_linears(loaded.model.linears(), &mut loaded.params)
}

/// [`quantize`] for layers gathered by the caller.
pub fn quantize_linears(linears: Vec<&mut Linear>, params: &mut Params) -> Result<()> {
    let mut released = std::collections::HashSet::new();
    for l in linears {
        released.insert(l.quantize()?);
    }
    params.entries.retain(|(k, v)| {
        let t = v.as_tensor();
        !super::save::is_linear_weight(k, t.dims()) || !released.contains(&t.id())
    });
    Ok(())
}

/// Loads with [`load_model`], then quantizes when `precision` asks for it.
pub fn load_model_at<M: Buildable>(
    ckpt: Checkpoint,
    fresh: Fresh,
    device: &Device,
    precision: Precision,
) -> Result<Loaded<M>> {
    let mut loaded = load_model::<M>(ckpt, None, fresh, 0, device)?;
    if precision == Precision::Int8 {
        quantize(&mut loaded)?;
    }
    Ok(loaded)
}

/// `BertImgModel` on its own (keys `bert.*`).
pub struct Backbone(pub BertImgModel);

impl Buildable for Backbone {
    const HEAD: HeadKind = HeadKind::Backbone;
    fn build(pb: &ParamBuilder, cfg: &OscarConfig) -> candle_core::Result<Self> {
        Ok(Backbone(BertImgModel::new(&pb.pp("bert"), cfg)?))
    }
    fn head_prefixes() -> &'static [&'static str] {
        &[]
    }
    fn linears(&mut self) -> Vec<&mut Linear> {
        self.0.linears()
    }
}

impl Buildable for BertImgForPreTraining {
    const HEAD: HeadKind = HeadKind::PreTraining;
    fn build(pb: &ParamBuilder, cfg: &OscarConfig) -> candle_core::Result<Self> {
        Self::new(pb, cfg)
    }
    fn tied(_cfg: &OscarConfig) -> bool {
        true
    }
    fn head_prefixes() -> &'static [&'static str] {
        &["cls."]
    }
    fn linears(&mut self) -> Vec<&mut Linear> {
        self.linears()
    }
}

impl Buildable for ImageBertForSequenceClassification {
    const HEAD: HeadKind = HeadKind::SequenceClassification;
    fn build(pb: &ParamBuilder, cfg: &OscarConfig) -> candle_core::Result<Self> {
        Self::new(pb, cfg)
    }
    fn head_prefixes() -> &'static [&'static str] {
        &["classifier."]
    }
    fn linears(&mut self) -> Vec<&mut Linear> {
        self.linears()
    }
}

impl Buildable for ImageBertForMultipleChoice {
    const HEAD: HeadKind = HeadKind::MultipleChoice;
    fn build(pb: &ParamBuilder, cfg: &OscarConfig) -> candle_core::Result<Self> {
        Self::new(pb, cfg)
    }
    fn head_prefixes() -> &'static [&'static str] {
        &["classifier."]
    }
    fn linears(&mut self) -> Vec<&mut Linear> {
        self.linears()
    }
}

impl Buildable for BertForImageCaptioning {
    const HEAD: HeadKind = HeadKind::Captioning;
    fn build(pb: &ParamBuilder, cfg: &OscarConfig) -> candle_core::Result<Self> {
        Self::new(pb, cfg)
    }
    fn tied(cfg: &OscarConfig) -> bool {
        cfg.tie_weights
    }
    fn head_prefixes() -> &'static [&'static str] {
        &["cls."]
    }
    fn linears(&mut self) -> Vec<&mut Linear> {
        self.linears()
    }
}

/// Which missing parameters may be created fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// None: every parameter must be in the checkpoint.
    Nothing,
    /// The task head (initialising a fine-tuning model from a pre-trained one).
    Head,
    /// Anything missing (initialising from plain BERT: image embedding and heads are new).
    Missing,
}

/// A built model with its parameters, the config it was built with and the load report.
pub struct Loaded<M> {
    pub model: M,
    pub params: Params,
    pub config: OscarConfig,
    pub report: LoadReport,
}

/// Builds a fresh model (HF initialisation, seeded) on `device`.
pub fn build_fresh<M: Buildable>(
    cfg: &OscarConfig,
    seed: u64,
    device: &Device,
) -> Result<Loaded<M>> {
    cfg.validate().map_err(Error::Invalid)?;
    let pb = ParamBuilder::fresh(seed, device);
    let model = M::build(&pb, cfg)?;
    let (params, report) = pb.finish();
    Ok(Loaded {
        model,
        params,
        config: cfg.clone(),
        report,
    })
}

/// Builds `M` from a checkpoint. `config` overrides the checkpoint's `config.json`.
pub fn load_model<M: Buildable>(
    ckpt: Checkpoint,
    config: Option<OscarConfig>,
    fresh: Fresh,
    seed: u64,
    device: &Device,
) -> Result<Loaded<M>> {
    let path = ckpt.path.clone();
    let mut cfg = config.or(ckpt.config).ok_or_else(|| {
        Error::bad_file(
            &path,
            "no config.json next to the weights: pass a config (Oscar checkpoints ship one)",
        )
    })?;
    cfg.validate()
        .map_err(|e| Error::bad_file(&path, format!("config: {e}")))?;
    let mut tensors = ckpt.tensors;
    let mut notes = normalize_keys(&mut tensors, M::HEAD, M::tied(&cfg), cfg.vocab_size)?;

    // The image LayerNorm exists exactly when the checkpoint has it (oscar-spec §5).
    let has_img_ln = tensors.contains_key("bert.LayerNorm.weight");
    match cfg.use_img_layernorm {
        None => {
            cfg.use_img_layernorm = Some(has_img_ln);
            notes.push(format!(
                "use_img_layernorm inferred as {has_img_ln} from bert.LayerNorm.weight"
            ));
        }
        Some(false) if has_img_ln => {
            cfg.use_img_layernorm = Some(true);
            notes.push("config says use_img_layernorm = 0 but the checkpoint has bert.LayerNorm.*: using it".into());
        }
        _ => {}
    }

    let mut prefixes: Vec<String> = match fresh {
        Fresh::Nothing => vec![],
        Fresh::Head | Fresh::Missing => M::head_prefixes().iter().map(|s| s.to_string()).collect(),
    };
    // A 2-class contrastive head loads into a 3-class model (and back) as the reference
    // tolerates: the head starts fresh.
    if M::HEAD == HeadKind::PreTraining {
        if let Some(w) = tensors.get("cls.seq_relationship.weight") {
            if w.dim(0)? != cfg.num_contrast_classes {
                notes.push(format!(
                    "cls.seq_relationship has {} classes, the model {}: head initialised fresh",
                    w.dim(0)?,
                    cfg.num_contrast_classes
                ));
                tensors.remove("cls.seq_relationship.weight");
                tensors.remove("cls.seq_relationship.bias");
                prefixes.push("cls.seq_relationship.".into());
            }
        }
    }
    let policy = if fresh == Fresh::Missing {
        FreshPolicy::All
    } else {
        FreshPolicy::Prefixes(prefixes)
    };
    let pb = ParamBuilder::from_tensors(tensors, policy, seed, device);
    let model = M::build(&pb, &cfg)?;
    let (params, mut report) = pb.finish();
    report.notes.extend(notes);
    if !report.is_ok() {
        let mut details = report.problems();
        if !report.unexpected.is_empty() {
            details += &format!(
                "unexpected keys ({}): {}\n",
                report.unexpected.len(),
                report.unexpected.join(", ")
            );
        }
        details += "(use a fresh head to start the task head from scratch)";
        return Err(Error::CheckpointMismatch { path, details });
    }
    Ok(Loaded {
        model,
        params,
        config: cfg,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::read_weights;
    use crate::nn::int8::PackedWeight;
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    /// An int8 weight with group exponents reads back as `q · scale · 2^-e`, the weights the
    /// packed layer computes with; an exponent out of range or of the wrong shape is an error
    /// naming its key.
    #[test]
    fn int8_weights_with_exponents_read_back_and_bad_ones_are_named() {
        let (n, k) = (5, 70);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * if i % k < 32 { 0.1 } else { 0.001 })
            .collect();
        let p = PackedWeight::quantize_with(&w, n, k, true);
        let exps = p.exponents().expect("the small groups take exponents");
        let q: Vec<u8> = p.quantized().iter().map(|&v| v as u8).collect();
        let scales: Vec<u8> = p.scales.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        let write = |exps: &[u8], shape: Vec<usize>| {
            let t = [
                (
                    "l.weight",
                    TensorView::new(Dtype::I8, vec![n, k], &q).unwrap(),
                ),
                (
                    "l.weight_scale",
                    TensorView::new(Dtype::F32, vec![n], &scales).unwrap(),
                ),
                (
                    "l.weight_exponent",
                    TensorView::new(Dtype::U8, shape, exps).unwrap(),
                ),
            ];
            let path = dir.path().join("model.safetensors");
            safetensors::tensor::serialize_to_file(t, None, &path).unwrap();
            read_weights(&path)
        };
        let (map, _) = write(&exps, vec![n, 3]).unwrap();
        assert_eq!(map.len(), 1, "the companions are consumed");
        let got = map["l.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want: Vec<f32> = (0..k).flat_map(|kk| p.dequantized_column(kk)).collect();
        for j in 0..n {
            for kk in 0..k {
                assert_eq!(got[j * k + kk], want[kk * n + j], "({j}, {kk})");
            }
        }
        assert_eq!(PackedWeight::quantize_with(&got, n, k, true), p);
        let mut bad = exps.clone();
        bad[4] = 4;
        let err = write(&bad, vec![n, 3]).unwrap_err().to_string();
        assert!(
            err.contains("l.weight_exponent") && err.contains("at most 3"),
            "{err}"
        );
        let err = write(&exps[..2 * n], vec![n, 2]).unwrap_err().to_string();
        assert!(
            err.contains("l.weight_exponent") && err.contains("[5, 3]"),
            "{err}"
        );
    }
}
