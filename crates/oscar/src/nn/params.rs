//! Parameters: created once while the model is built, either fresh (HF `_init_weights`:
//! N(0, initializer_range) for weights, zeros for biases, ones for LayerNorm weights) or taken
//! from a checkpoint. The builder's prefix path *is* the state-dict key
//! (`bert.encoder.layer.0.attention.self.query.weight`), so loading is structural.

use candle_core::{DType, Device, Shape, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// How a fresh parameter is initialised.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

/// Which parameters may be created fresh when a checkpoint lacks them.
#[derive(Debug, Clone, Default)]
pub enum FreshPolicy {
    /// Every parameter must come from the checkpoint.
    #[default]
    None,
    /// Parameters whose key starts with one of these prefixes may be fresh (a new head).
    Prefixes(Vec<String>),
    /// Any missing parameter is fresh (initialising from a different architecture, e.g. BERT).
    All,
}

impl FreshPolicy {
    fn allows(&self, key: &str) -> bool {
        match self {
            FreshPolicy::None => false,
            FreshPolicy::All => true,
            FreshPolicy::Prefixes(p) => p.iter().any(|p| key.starts_with(p.as_str())),
        }
    }
}

/// What happened to each key while building a model from a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Keys the model needed that the checkpoint lacks, and that were not allowed to be fresh.
    pub missing: Vec<String>,
    /// Keys the model needed and created fresh (allowed by the caller).
    pub fresh: Vec<String>,
    /// Checkpoint keys the model did not use.
    pub unexpected: Vec<String>,
    /// Keys present with the wrong shape: `key: checkpoint [..], model expects [..]`.
    pub mismatched: Vec<String>,
    /// What the loader changed or inferred (renamed keys, tied weights, inferred flags).
    pub notes: Vec<String>,
}

impl LoadReport {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && self.mismatched.is_empty()
    }

    /// A human-readable listing of the problems (missing and mismatched keys).
    pub fn problems(&self) -> String {
        let mut s = String::new();
        if !self.missing.is_empty() {
            s += &format!(
                "missing keys ({}): {}\n",
                self.missing.len(),
                self.missing.join(", ")
            );
        }
        for m in &self.mismatched {
            s += &format!("wrong shape: {m}\n");
        }
        s
    }
}

struct Store {
    params: Vec<(String, Var)>,
    ckpt: Option<HashMap<String, Tensor>>,
    used: Vec<String>,
    policy: FreshPolicy,
    report: LoadReport,
    rng: StdRng,
    device: Device,
}

/// The trainable parameters of a built model, in creation order, by state-dict key.
#[derive(Clone, Default)]
pub struct Params {
    pub entries: Vec<(String, Var)>,
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&Var> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    /// The device the parameters live on (the CPU for a model without parameters).
    pub fn device(&self) -> candle_core::Device {
        self.entries
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu)
    }
    pub fn count(&self) -> usize {
        self.entries.iter().map(|(_, v)| v.elem_count()).sum()
    }
    /// Key → tensor, ready for safetensors.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.entries
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }
}

/// Hands out parameters under a key prefix; `pp` descends one module level.
#[derive(Clone)]
pub struct ParamBuilder {
    store: Rc<RefCell<Store>>,
    prefix: String,
}

impl ParamBuilder {
    /// A builder whose parameters are all fresh, drawn from a generator seeded with `seed`.
    pub fn fresh(seed: u64, device: &Device) -> Self {
        Self::new(None, FreshPolicy::All, seed, device)
    }

    /// A builder that takes parameters from `tensors` (already renamed to our keys); missing
    /// keys are fresh only where `policy` allows it.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        policy: FreshPolicy,
        seed: u64,
        device: &Device,
    ) -> Self {
        Self::new(Some(tensors), policy, seed, device)
    }

    fn new(
        ckpt: Option<HashMap<String, Tensor>>,
        policy: FreshPolicy,
        seed: u64,
        device: &Device,
    ) -> Self {
        let store = Store {
            params: Vec::new(),
            ckpt,
            used: Vec::new(),
            policy,
            report: LoadReport::default(),
            rng: StdRng::seed_from_u64(seed),
            device: device.clone(),
        };
        ParamBuilder {
            store: Rc::new(RefCell::new(store)),
            prefix: String::new(),
        }
    }

    /// The builder one level down: `pp("encoder")` turns `bert` into `bert.encoder`.
    pub fn pp(&self, name: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        ParamBuilder {
            store: self.store.clone(),
            prefix,
        }
    }

    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the checkpoint behind this builder holds `name` (relative to the prefix).
    pub fn contains(&self, name: &str) -> bool {
        let key = self.key(name);
        self.store
            .borrow()
            .ckpt
            .as_ref()
            .is_some_and(|c| c.contains_key(&key))
    }

    /// Whether this builder reads a checkpoint (rather than creating everything fresh).
    pub fn has_checkpoint(&self) -> bool {
        self.store.borrow().ckpt.is_some()
    }

    pub fn device(&self) -> Device {
        self.store.borrow().device.clone()
    }

    /// The parameter `name` of `shape`. Problems (missing, wrong shape) are recorded in the
    /// report rather than raised, so one error can list them all; the model is then unusable
    /// and `finish` fails.
    pub fn get(
        &self,
        shape: impl Into<Shape>,
        name: &str,
        init: Init,
    ) -> candle_core::Result<Tensor> {
        let shape: Shape = shape.into();
        let key = self.key(name);
        let mut st = self.store.borrow_mut();
        let st = &mut *st;
        let from_ckpt = st.ckpt.as_ref().and_then(|c| c.get(&key)).cloned();
        let tensor = match from_ckpt {
            Some(t) if t.shape() == &shape => {
                st.used.push(key.clone());
                t.to_dtype(DType::F32)?
                    .to_device(&st.device)?
                    .contiguous()?
            }
            Some(t) => {
                st.used.push(key.clone());
                st.report.mismatched.push(format!(
                    "{key}: checkpoint {:?}, model expects {:?}",
                    t.dims(),
                    shape.dims()
                ));
                init_tensor(&shape, init, &mut st.rng, &st.device)?
            }
            None => {
                if st.ckpt.is_some() {
                    if st.policy.allows(&key) {
                        st.report.fresh.push(key.clone());
                    } else {
                        st.report.missing.push(key.clone());
                    }
                }
                init_tensor(&shape, init, &mut st.rng, &st.device)?
            }
        };
        let var = Var::from_tensor(&tensor)?;
        let t = var.as_tensor().clone();
        st.params.push((key, var));
        Ok(t)
    }

    /// Ends the build: the parameters and the load report (unexpected keys filled in).
    pub fn finish(self) -> (Params, LoadReport) {
        let mut st = self.store.borrow_mut();
        let mut report = std::mem::take(&mut st.report);
        if let Some(ckpt) = &st.ckpt {
            let used: std::collections::HashSet<&String> = st.used.iter().collect();
            let mut unexpected: Vec<String> =
                ckpt.keys().filter(|k| !used.contains(k)).cloned().collect();
            unexpected.sort();
            report.unexpected = unexpected;
        }
        (
            Params {
                entries: std::mem::take(&mut st.params),
            },
            report,
        )
    }
}

fn init_tensor(
    shape: &Shape,
    init: Init,
    rng: &mut StdRng,
    device: &Device,
) -> candle_core::Result<Tensor> {
    match init {
        Init::Zeros => Tensor::zeros(shape, DType::F32, device),
        Init::Ones => Tensor::ones(shape, DType::F32, device),
        Init::Normal(std) => {
            let normal = Normal::new(0.0f32, std as f32)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let v: Vec<f32> = (0..shape.elem_count())
                .map(|_| normal.sample(rng))
                .collect();
            Tensor::from_vec(v, shape, device)
        }
    }
}
